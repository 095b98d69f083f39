"""Audit of a curated output directory: what the dataset holds, why clips were dropped, and
checks that fail loudly (``mocha audit OUTPUT_DIR``).

``load`` reads the shards (schema-checked), ``checks`` finds faults, ``plots`` draws the charts,
``report`` assembles the HTML page and the JSON summary, ``cli`` is the command."""
