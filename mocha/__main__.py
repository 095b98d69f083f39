"""`python -m mocha ...` is the `mocha` command."""
import sys

from mocha.cli import main

sys.exit(main())
