"""The Airflow DAG: parses in Airflow's DagBag (in its own venv, .venv-airflow) without import
errors, chains curate -> audit -> train stage 0..3, sets retries and timeouts, and every task's
command line parses with the project's own CLI (and the Ray CLI for the cluster variant)."""
from __future__ import annotations

import ast
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DAG_FILE = ROOT / "dags" / "mocha_pipeline.py"
AIRFLOW_VENV = ROOT / ".venv-airflow"
MOCHA = Path(sys.executable).with_name("mocha")
EXPECTED_ORDER = ["curate", "audit", "train_stage0", "train_stage1", "train_stage2", "train_stage3"]
RAY_ADDRESS = "http://head-node:8265"
# Param values a shell would split or expand if they were not quoted.
NASTY = {"inputs": ["my videos/a b.mp4", "x; touch pwned", "*.mp4"], "output": "out dir/$HOME",
         "curate_args": ["--set", "scenes.max_clip_s=8"]}
VARIANTS = {"local": {}, "ray": {"ray_address": RAY_ADDRESS}, "nasty": NASTY}

pytestmark = pytest.mark.airflow

# Runs inside .venv-airflow, from a directory where the project is not importable: a DAG file
# that imported the project would show up as an import error here.
_PROBE = r"""
import json, sys, types
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
out = {"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}, "dag_ids": sorted(bag.dag_ids)}
dag = bag.dags.get("mocha_pipeline")
if dag is not None:
    out["order"] = [t.task_id for t in dag.topological_sort()] if hasattr(dag, "topological_sort") else None
    out["tasks"] = {}
    variants = json.loads(sys.argv[2])
    for t in dag.tasks:
        info = {"upstream": sorted(t.upstream_task_ids), "retries": t.retries,
                "timeout_s": t.execution_timeout.total_seconds() if t.execution_timeout else None,
                "operator": type(t).__name__, "commands": {}}
        for name, override in variants.items():
            params = {**dag.params.dump(), **override}
            ctx = {"params": params, "ts_nodash": "20260102T030405", "run_id": "manual__x",
                   "ti": types.SimpleNamespace(try_number=2)}
            info["commands"][name] = t.render_template(t.bash_command, ctx, jinja_env=dag.get_template_env())
        out["tasks"][t.task_id] = info
    out["schedule"] = str(getattr(dag, "schedule", None))
    out["param_defaults"] = dag.params.dump()
print("PROBE-JSON " + json.dumps(out))
"""


def _build_airflow_venv() -> Path | None:
    """Create .venv-airflow from requirements/airflow.txt (what `make airflow-venv` does)."""
    base = shutil.which("python3") or sys.executable
    try:
        if not (AIRFLOW_VENV / "bin" / "python").exists():
            subprocess.run([base, "-m", "venv", str(AIRFLOW_VENV)], check=True, timeout=300, capture_output=True)
        subprocess.run([str(AIRFLOW_VENV / "bin" / "python"), "-m", "pip", "-q", "--disable-pip-version-check",
                        "install", "-r", str(ROOT / "requirements" / "airflow.txt")],
                       check=True, timeout=900, capture_output=True)
        (AIRFLOW_VENV / ".installed").touch()
    except (subprocess.SubprocessError, OSError):
        return None
    return AIRFLOW_VENV / "bin" / "python"


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict:
    py = AIRFLOW_VENV / "bin" / "python"
    if not (AIRFLOW_VENV / ".installed").exists():
        py = _build_airflow_venv()
        if py is None:
            pytest.skip("could not build .venv-airflow (`make airflow-venv` needs the package registry)")
    home = tmp_path_factory.mktemp("airflow_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(DAG_FILE.parent))
    r = subprocess.run([str(py), "-c", _PROBE, str(DAG_FILE.parent), json.dumps(VARIANTS)], cwd=home, env=env,
                       capture_output=True, text=True, timeout=300)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("PROBE-JSON ")]
    assert r.returncode == 0 and lines, f"DagBag probe failed ({r.returncode}):\n{r.stderr[-4000:]}"
    return json.loads(lines[-1][len("PROBE-JSON "):])


def test_dag_parses_without_import_errors(probe):
    assert probe["import_errors"] == {}
    assert "mocha_pipeline" in probe["dag_ids"]


def test_task_order(probe):
    tasks = probe["tasks"]
    assert set(tasks) == set(EXPECTED_ORDER)
    assert probe["order"] == EXPECTED_ORDER
    for prev, task in zip([None] + EXPECTED_ORDER, EXPECTED_ORDER):
        assert tasks[task]["upstream"] == ([prev] if prev else [])


def test_retries_and_timeouts(probe):
    for name, t in probe["tasks"].items():
        assert t["operator"] == "BashOperator"
        assert t["timeout_s"] and t["timeout_s"] > 0, name
        assert isinstance(t["retries"], int) and t["retries"] >= 0, name
    assert probe["tasks"]["curate"]["retries"] >= 1  # resumable: a retry continues the run
    assert probe["tasks"]["audit"]["retries"] == 0  # a failed check is deterministic
    assert probe["schedule"] not in ("None", "")


def test_dag_file_imports_nothing_of_the_project():
    tree = ast.parse(DAG_FILE.read_text())
    roots = {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    roots |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not roots & {"pipeline", "schemas", "model", "training", "dags"}, roots
    # ... and Airflow never leaks into the project's packages.
    for pkg in ("pipeline", "schemas", "model", "training"):
        for f in (ROOT / pkg).rglob("*.py"):
            assert "import airflow" not in f.read_text() and "from airflow" not in f.read_text(), f


def _mocha_args(command: str) -> list[str]:
    argv = shlex.split(command)
    assert argv[0] == "mocha", command
    return argv[1:]


def test_params_reach_the_shell_quoted(probe):
    cmd = probe["tasks"]["curate"]["commands"]["nasty"]
    argv = shlex.split(cmd)
    assert argv[:2] == ["mocha", "curate"]
    assert argv[2:2 + len(NASTY["inputs"])] == NASTY["inputs"]  # each value stays one argument
    assert argv[argv.index("--output") + 1] == NASTY["output"]
    assert argv[-2:] == NASTY["curate_args"]
    audit = shlex.split(probe["tasks"]["audit"]["commands"]["nasty"])
    assert audit[2] == NASTY["output"] and audit[audit.index("--out") + 1] == NASTY["output"] + "/audit"
    local = shlex.split(probe["tasks"]["curate"]["commands"]["local"])
    assert local[2:2 + len(probe["param_defaults"]["inputs"])] == probe["param_defaults"]["inputs"]


def test_ray_variant_is_a_valid_ray_job_submit(probe):
    from ray.dashboard.modules.job.cli import job_cli_group

    argv = shlex.split(probe["tasks"]["curate"]["commands"]["ray"])
    assert argv[:3] == ["ray", "job", "submit"]
    ctx = job_cli_group.commands["submit"].make_context("submit", argv[3:])  # raises on a bad option
    assert ctx.params["address"] == RAY_ADDRESS
    assert ctx.params["submission_id"].endswith("-2")  # one id per attempt: a retry is a new job
    entry = list(ctx.params["entrypoint"])
    assert entry[:2] == ["mocha", "curate"] and entry[-1] != "--ray-address"
    assert entry[entry.index("--ray-address") + 1] == "auto"


def _variants(probe, task) -> dict[str, list[str]]:
    """Distinct mocha argv per param variant (the Ray job's entrypoint is a mocha command too)."""
    out, seen = {}, set()
    for variant, cmd in probe["tasks"][task]["commands"].items():
        if cmd.startswith("ray "):
            cmd = cmd.split(" -- ", 1)[1]
        args = _mocha_args(cmd)
        if tuple(args) not in seen:
            seen.add(tuple(args))
            out[variant] = args
    return out


def _exit_code(argv: list[str]) -> int:
    """Run the project's CLI entry point in-process (argparse and LightningCLI exit by SystemExit)."""
    from mocha.cli import main

    try:
        return main(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


@pytest.mark.parametrize("task", EXPECTED_ORDER)
def test_task_command_parses_with_the_project_cli(probe, task, capsys):
    import yaml

    from mocha.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for variant, args in _variants(probe, task).items():
        assert args[0] in sub.choices, f"`mocha {args[0]}` is not a registered command"
        if args[0] == "train":
            config = args[args.index("--config") + 1]
            assert (ROOT / config).is_file(), f"{config} (a training stage config) is missing"
        assert _exit_code([*args, "--help"]) == 0, f"{variant}: mocha {shlex.join(args)} --help"
        assert "usage" in capsys.readouterr().out.lower()
        if args[0] != "train":
            parser.parse_args(args)  # argparse exits (SystemExit 2) on an unknown or missing argument
            continue
        # LightningCLI handles --help before it validates the rest; --print_config parses and
        # validates every argument and the stage config, then exits without training.
        assert _exit_code([*args, "--print_config"]) == 0, f"{variant}: mocha {shlex.join(args)} --print_config"
        cfg = yaml.safe_load(capsys.readouterr().out)
        output = probe["param_defaults"]["output"] if variant != "nasty" else NASTY["output"]
        assert cfg["data"]["init_args"]["roots"] == [output]
        stage = int(task[-1])
        assert cfg["trainer"]["default_root_dir"] == f"runs/stage{stage}"
        assert cfg["model"]["init_from"] == (f"runs/stage{stage - 1}/last.ckpt" if stage else None)


def test_console_script_accepts_the_curate_command(probe):
    args = _mocha_args(probe["tasks"]["curate"]["commands"]["nasty"])
    r = subprocess.run([str(MOCHA), *args, "--help"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage: mocha curate" in r.stdout
