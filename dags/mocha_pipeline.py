"""Airflow DAG: curate -> audit (fails the run on broken data) -> train stage 0 -> 1 -> 2 -> 3.

Every task calls the project's own command line (``mocha ...``); this file imports nothing of
the project, so the scheduler can parse it without the project's heavy dependencies, and the
project never needs Airflow. Values come from Airflow params (editable per run in the UI) and
reach the shell only through the ``sh`` filter (shlex quoting).

Curation runs locally, or as a Ray job on a cluster when ``ray_address`` is set (the Ray job
submission address, e.g. http://head:8265); ``ray job submit`` waits for the job and exits 1
when it fails, so the task fails with it. A retried curation resumes: the output dir keeps
the shards and ledger rows already committed.
"""
from __future__ import annotations

import shlex
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param

DAG_ID = "mocha_pipeline"
TRAIN_STAGES = (0, 1, 2, 3)


def sh(value) -> str:
    """Shell-quote one value, or each item of a list (joined by spaces)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(shlex.quote(str(v)) for v in value)
    return shlex.quote(str(value))


CURATE = (
    "{% if params.ray_address %}"
    "{{ params.ray_bin | sh }} job submit --address {{ params.ray_address | sh }}"
    " --submission-id {{ ('mocha-curate-' ~ ts_nodash ~ '-' ~ ti.try_number) | sh }}"
    "{% if params.ray_working_dir %} --working-dir {{ params.ray_working_dir | sh }}{% endif %} -- "
    "{% endif %}"
    "{{ params.mocha | sh }} curate {{ params.inputs | sh }} --output {{ params.output | sh }}"
    "{% if params.curate_config %} --config {{ params.curate_config | sh }}{% endif %}"
    "{% if params.ray_address %} --ray-address auto{% endif %}"
    " --no-progress {{ params.curate_args | sh }}"
)

AUDIT = (
    "{{ params.mocha | sh }} audit {{ params.output | sh }}"
    " --out {{ (params.output ~ '/audit') | sh }} --fail-on {{ params.audit_fail_on | sh }}"
)


def train_command(stage: int) -> str:
    """``mocha train fit`` for one curriculum stage (LightningCLI arguments); stage N>0 starts
    from the weights of stage N-1, whose ModelCheckpoint writes last.ckpt into its
    default_root_dir (mocha/train.py)."""
    cmd = (
        "{{ params.mocha | sh }} train fit"
        f" --config {{{{ (params.train_config_dir ~ '/stage{stage}.yaml') | sh }}}}"
        " --data.roots {{ [params.output] | tojson | sh }}"
        f" --trainer.default_root_dir {{{{ (params.runs_dir ~ '/stage{stage}') | sh }}}}"
    )
    if stage > 0:
        cmd += f" --model.init_from {{{{ (params.runs_dir ~ '/stage{stage - 1}/last.ckpt') | sh }}}}"
    return cmd + " {{ params.train_args | sh }}"


default_args = {
    "owner": "mocha",
    "retries": 1,
    "retry_delay": timedelta(minutes=10),
    "retry_exponential_backoff": True,
}

with DAG(
    dag_id=DAG_ID,
    description="Curate talking-character clips, audit them, train the four curriculum stages",
    schedule="@weekly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # two runs would write one output dir at once
    dagrun_timeout=timedelta(days=8),
    default_args=default_args,
    user_defined_filters={"sh": sh},
    tags=["mocha", "curation", "training"],
    params={
        "inputs": Param(["raw/"], type="array", description="videos: files, dirs, globs or pyarrow URIs"),
        "output": Param("curated", type="string", description="output dir of curate, read by audit and train"),
        "curate_config": Param("", type="string", description="YAML config for curate (empty: defaults)"),
        "curate_args": Param([], type="array", description="extra curate args, e.g. ['--set', 'scenes.max_clip_s=8']"),
        "ray_address": Param("", type="string", description="Ray job submission address; empty runs curate locally"),
        "ray_working_dir": Param("", type="string", description="dir uploaded with the Ray job; empty when the "
                                                               "cluster image has the project installed"),
        "ray_bin": Param("ray", type="string"),
        "mocha": Param("mocha", type="string", description="the mocha executable (path or name on PATH)"),
        "workdir": Param(".", type="string", description="working dir of every task (relative paths start here)"),
        "audit_fail_on": Param("all", type="string", description="checks that fail the run (comma list or 'all')"),
        "train_config_dir": Param("training/configs", type="string"),
        "runs_dir": Param("runs", type="string", description="checkpoints and logs, one subdir per stage"),
        "train_args": Param([], type="array", description="extra args for every train stage"),
    },
) as dag:
    common = {"cwd": "{{ params.workdir }}", "skip_on_exit_code": None}
    curate = BashOperator(task_id="curate", bash_command=CURATE, execution_timeout=timedelta(hours=24),
                          retries=2, **common)
    # A failed check is deterministic: retrying the audit cannot fix the data.
    audit = BashOperator(task_id="audit", bash_command=AUDIT, execution_timeout=timedelta(hours=1),
                         retries=0, **common)
    train = [BashOperator(task_id=f"train_stage{s}", bash_command=train_command(s),
                          execution_timeout=timedelta(hours=48), **common) for s in TRAIN_STAGES]
    curate >> audit >> train[0]
    for a, b in zip(train, train[1:]):
        a >> b
