"""The `mlrig` command line. Heavy libraries load inside commands, so `--help` stays fast."""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from mlrig import __version__
from mlrig.errors import exits_cleanly, redact
from mlrig.text import counted

if TYPE_CHECKING:
    from mlrig.clearml_pipeline import PipelineDescription
    from mlrig.pipeline import RunSummary
    from mlrig.settings import Settings
    from mlrig.tune import TuneSummary


#: options of a ClearML submission, shared by `mlrig run --executor clearml` and
#: `mlrig clearml pipeline`
ImageDigestsOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--images",
        help="Digest files of pushed step images (mlrig images push --digests; the GitLab build "
        "jobs' images-<step>.json): those steps run by digest instead of their local tag.",
    ),
]
WaitOption = Annotated[
    bool,
    typer.Option(help="Follow the steps' status to the end; exit non-zero naming failed steps."),
]


class Executor(StrEnum):
    """Where the stages of `mlrig run` run."""

    local = "local"
    containers = "containers"
    clearml = "clearml"


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="mlrig: DVC pipeline, MLflow tracking and registry, ClearML automation, in one repo.",
)
clearml_app = typer.Typer(
    no_args_is_help=True, help="ClearML: offline sessions, and the pipeline on ClearML queues."
)
app.add_typer(clearml_app, name="clearml")
stack_app = typer.Typer(
    no_args_is_help=True, help="The local stack: PostgreSQL, S3 and an MLflow server on 127.0.0.1."
)
app.add_typer(stack_app, name="stack")
images_app = typer.Typer(
    no_args_is_help=True, help="The step images (images/step/Dockerfile, one per step)."
)
app.add_typer(images_app, name="images")
chart_app = typer.Typer(
    no_args_is_help=True,
    help="The Helm chart's pods on this machine (podman kube play of helm/mlrig, no cluster).",
)
app.add_typer(chart_app, name="chart")
ci_app = typer.Typer(no_args_is_help=True, help="What the GitLab CI jobs run (.gitlab-ci.yml).")
app.add_typer(ci_app, name="ci")
console = Console(stderr=True)


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mlrig {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """mlrig: DVC pipeline, MLflow tracking and registry, ClearML automation, in one repo."""
    import os

    # our own summary says where runs are; MLflow's "View run at" lines would break --json
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


@app.command()
@exits_cleanly
def run(
    set_param: Annotated[
        list[str] | None,
        typer.Option(
            "--set-param",
            "-S",
            help="Override a param, e.g. -S split.seed=7 (saved to params.yaml).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-run every stage, even unchanged ones.")] = False,
    push: Annotated[
        bool, typer.Option(help="Push outputs and run-cache to the DVC remote.")
    ] = True,
    stack: Annotated[
        str | None,
        typer.Option(help="Run against a stack: `local` loads the settings of `mlrig stack up`."),
    ] = None,
    executor: Annotated[
        Executor,
        typer.Option(
            help="local: each stage by dvc repro here. containers: each in its step image, data "
            "through the DVC remote, results through the MLflow server (make images first). "
            "clearml: submit the pipeline to ClearML queues, each stage a step in its image.",
        ),
    ] = Executor.local,
    queue: Annotated[
        str | None,
        typer.Option(
            help="With --executor clearml: the queue of the steps (default MLRIG_CLEARML_QUEUE)."
        ),
    ] = None,
    images: ImageDigestsOption = None,
    wait: WaitOption = False,
    jobs: Annotated[int, typer.Option(min=1, help="How many independent stages run at once.")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run the pipeline (dvc repro) under one MLflow parent run, then push to the DVC remote."""
    from mlrig.clearml_sessions import prune_sessions
    from mlrig.settings import load_settings

    if stack is not None:
        use_stack(stack)
    settings = load_settings()
    refuse_options_of_another_executor(executor, bool(set_param), queue, bool(images), wait)
    if executor is Executor.clearml:
        submit_to_clearml(settings, queue, images or [], wait, as_json)
        return
    summary = run_with_progress(settings, set_param or [], force, push, executor, jobs, as_json)
    pruned = prune_sessions(settings).message()
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
    else:
        typer.echo("\n".join(run_summary_lines(summary)))
    if pruned:
        console.print(pruned, soft_wrap=True, markup=False, highlight=False)


def refuse_options_of_another_executor(
    executor: Executor, overrides: bool, queue: str | None, images: bool, wait: bool
) -> None:
    """Refuse what the chosen executor cannot take.

    Raises:
        ConfigError: -S for a ClearML submission, or a ClearML option for another executor.
    """
    from mlrig.errors import ConfigError

    if executor is Executor.clearml and overrides:
        raise ConfigError(
            "--executor clearml runs the committed params.yaml in the cluster, so -S cannot "
            "reach it: edit params.yaml, commit it, then submit without -S."
        )
    if executor is not Executor.clearml and (queue is not None or images or wait):
        raise ConfigError(
            "--queue, --images and --wait are for a ClearML submission: use them with "
            "--executor clearml."
        )


def run_with_progress(
    settings: Settings,
    overrides: list[str],
    force: bool,
    push: bool,
    executor: Executor,
    jobs: int,
    quiet: bool,
) -> RunSummary:
    """`run_pipeline` with a spinner naming the stage or phase (and, unless quiet, a line per
    stage started)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from mlrig.pipeline import run_pipeline

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as progress:
        current = progress.add_task("starting", total=None)

        def on_stage(stage: str) -> None:
            progress.update(current, description=f"stage {stage}")
            if not quiet:
                console.print(f"[green]▶[/] {stage}")

        return run_pipeline(
            settings,
            overrides,
            force=force,
            push=push,
            executor=executor.value,
            jobs=jobs,
            on_stage=on_stage,
            on_phase=lambda phase: progress.update(current, description=phase),
        )


def run_summary_lines(summary: RunSummary) -> list[str]:
    """The closing message of `mlrig run`: what ran, where the report and the runs are."""
    lines = [f"Corrupted: {line}" for line in summary.repaired]
    if summary.up_to_date:
        lines.append("Pipeline up to date: no stage re-ran.")
    else:
        ran = counted(len(summary.stages_run), "stage")
        lines.append(f"Pipeline run {summary.pipeline_run_id}: {ran} ran.")
        times = ", ".join(
            f"{stage} {seconds:.1f}s" for stage, seconds in summary.stage_seconds.items()
        )
        lines.append(f"Stages:    {times}")
    lines.append(f"Report:    {summary.report}")
    lines.append(
        f"MLflow:    {counted(summary.runs_recorded, 'experiment run')} recorded by this "
        "pipeline run, "
        f"{counted(summary.runs_in_experiment, 'run')} in the experiment"
    )
    if champion := summary.champion:
        status = (
            f"{champion.registered_model} v{champion.version}"
            if champion.version
            else "not registered"
        )
        lines.append(
            f"Champion:  {champion.experiment} ({champion.metric}={champion.value:.4f}), "
            f"{status} @champion; {champion.reason}"
        )
    lines.append(f"MLflow UI: {summary.mlflow_ui}")
    return lines


class TuneExecutor(StrEnum):
    """Where the trials of `mlrig tune` run."""

    local = "local"
    clearml = "clearml"


@app.command()
@exits_cleanly
def tune(
    experiment: Annotated[
        str, typer.Argument(help="The experiment to tune: a key of train.experiments.")
    ],
    trials: Annotated[
        int | None, typer.Option(help="How many trials (default: tune.trials in params.yaml).")
    ] = None,
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="Write the best params into train.experiments.<EXPERIMENT>.params of "
            "params.yaml (comments kept); mlrig run then trains with them.",
        ),
    ] = False,
    executor: Annotated[
        TuneExecutor,
        typer.Option(
            help="local: Optuna here, each trial an MLflow child run. clearml: ClearML's "
            "HyperParameterOptimizer (Optuna), each trial a task on --queue (needs a server)."
        ),
    ] = TuneExecutor.local,
    queue: Annotated[
        str | None,
        typer.Option(
            help="With --executor clearml: the queue of the trials (default MLRIG_CLEARML_QUEUE)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Search an experiment's train params (tune: in params.yaml), scored by cross-validation
    on the train split with compare.metric; the test set stays held out."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from mlrig.errors import ConfigError
    from mlrig.params import TuneParams, load_section
    from mlrig.settings import load_settings
    from mlrig.tune import tune as run_tune
    from mlrig.tune import tune_on_clearml

    settings = load_settings()
    if executor is TuneExecutor.clearml:
        summary = tune_on_clearml(
            settings, experiment, trials, queue or settings.clearml_queue, apply=apply
        )
    else:
        if queue is not None:
            raise ConfigError("--queue is for ClearML trials: use it with --executor clearml.")
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
            disable=as_json,
        ) as progress:
            planned = (
                trials or load_section(settings.root / "params.yaml", "tune", TuneParams).trials
            )
            current = progress.add_task(f"tune {experiment}", total=planned)
            summary = run_tune(
                settings,
                experiment,
                trials,
                apply=apply,
                on_stage=lambda stage: progress.update(current, description=f"stage {stage}"),
                on_trial=lambda trial: progress.update(
                    current, advance=1, description=f"tune {experiment}: trial {trial.number}"
                ),
            )
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
        return
    print_tune_summary(summary)


def print_tune_summary(summary: TuneSummary) -> None:
    """The trials as a table, then the best params and what was done with them."""
    arrow = "↓" if summary.direction == "minimize" else "↑"
    table = Table(
        title=f"tune {summary.experiment} ({summary.family}): {summary.cv_folds}-fold CV on "
        f"the train split ({summary.train_rows} rows)"
    )
    table.add_column("trial", justify="right")
    for name in summary.searched:
        table.add_column(name, justify="right")
    table.add_column(f"cv {summary.metric} {arrow}", justify="right")
    table.add_column("±", justify="right")
    table.add_column("MLflow run" if summary.mlflow_parent_run_id else "ClearML task")
    for trial in summary.trials:
        best = trial.number == summary.best.number
        table.add_row(
            f"{trial.number}{' ★' if best else ''}",
            *(_shown(trial.params[name]) for name in summary.searched),
            f"{trial.score:.4f}",
            f"{trial.score_std:.4f}",
            (trial.mlflow_run_id or trial.clearml_task_id or "")[:12],
            style="bold green" if best else None,
        )
    Console(width=None if sys.stdout.isatty() else 240).print(table)
    shown = ", ".join(f"{name}={_shown(summary.best.params[name])}" for name in summary.searched)
    typer.echo(
        f"Best:    trial {summary.best.number}, cv {summary.metric}={summary.best.score:.4f}: "
        f"{shown}"
    )
    if summary.mlflow_parent_run_id:
        typer.echo(
            f"MLflow:  parent run {summary.mlflow_parent_run_id} (tune-{summary.experiment}) "
            f"in experiment {summary.mlflow_experiment}"
        )
    target = f"train.experiments.{summary.experiment}.params"
    if summary.applied:
        typer.echo(f"Applied: {target} in {summary.params_file}; mlrig run trains with them.")
    else:
        typer.echo(f"Not applied: mlrig tune {summary.experiment} --apply writes them to {target}.")


def _shown(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command("tune-trial", hidden=True)
@exits_cleanly
def tune_trial(
    experiment: Annotated[str, typer.Argument(help="The experiment of the search.")],
) -> None:
    """One ClearML trial of `mlrig tune --executor clearml` (what an agent runs)."""
    from mlrig.settings import load_settings
    from mlrig.tune import run_trial_task

    score = run_trial_task(load_settings(), experiment)
    typer.echo(f"tune-trial {experiment}: {score:.6f}")


@app.command("stage")
@exits_cleanly
def stage_command(
    name: Annotated[
        str | None,
        typer.Argument(
            help="The stage, as dvc.yaml names it: train@knn. In a ClearML step's pod: the "
            "step's stage (MLRIG_STAGE)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Run it even if DVC finds it unchanged.")] = False,
) -> None:
    """Run one stage as a step container does: pull its inputs, run it, push its outputs.

    Settings come from the environment: MLFLOW_TRACKING_URI (and its credentials),
    MLRIG_DVC_REMOTE_URL, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL for S3.
    A ClearML pipeline step's pod (MLRIG_STAGE and MLRIG_INPUT_KEY set) first fetches its
    workspace and the results of the stages before it from the DVC remote, and reports its
    status to its ClearML task (CLEARML_TASK_ID).
    """
    from mlrig.errors import ConfigError
    from mlrig.pipeline import exclusive_run
    from mlrig.settings import load_settings
    from mlrig.stage import require_settings, run_stage, run_step_task, step_of_pod

    require_settings()  # before anything else, so a bare container says what it lacks
    step = step_of_pod(os.environ)
    if step is not None and name in (None, step[0]) and not force:
        stage, input_key = step
        run_step_task(stage, input_key, Path.cwd(), on_phase=lambda phase: console.print(phase))
        return
    if name is None:
        raise ConfigError("Name the stage to run, e.g. mlrig stage train@knn (dvc.yaml has them).")
    settings = load_settings()
    with exclusive_run(settings, "mlrig stage"):
        run_stage(settings, name, force=force, on_phase=lambda phase: console.print(phase))


@images_app.command("build")
@exits_cleanly
def images_build_command(
    steps: Annotated[
        list[str] | None, typer.Argument(help="Step images to build (default: all).")
    ] = None,
) -> None:
    """Build the base and step images whose inputs changed (content-hash tags)."""
    from mlrig.images import build_images, find_engine
    from mlrig.settings import load_settings

    settings = load_settings()
    engine = find_engine(settings)
    with console.status("preparing the build (requirements, wheelhouse, mlrig wheel)") as status:
        images = build_images(
            settings, engine, steps, on_image=lambda name: status.update(f"image {name}")
        )
    for image in images:
        state = f"built in {image.seconds:.0f}s" if image.built else "up to date"
        typer.echo(f"{image.reference}  {state}")


@images_app.command("servers")
@exits_cleanly
def images_servers_command() -> None:
    """Build the Helm chart's server images (images/mlflow-server) whose inputs changed."""
    from mlrig.images import build_server_images, find_engine
    from mlrig.settings import load_settings

    settings = load_settings()
    engine = find_engine(settings)
    with console.status("preparing the build (requirements, wheelhouse)") as status:
        images = build_server_images(
            settings, engine, on_image=lambda name: status.update(f"image {name}")
        )
    for image in images:
        state = f"built in {image.seconds:.0f}s" if image.built else "up to date"
        typer.echo(f"{image.reference}  {state}")


@images_app.command("push")
@exits_cleanly
def images_push_command(
    registry: Annotated[
        str, typer.Option(help="where to push: registry/path (GitLab: $CI_REGISTRY_IMAGE)")
    ],
    step: Annotated[
        list[str] | None, typer.Option(help="a step's image (repeatable; default: every step)")
    ] = None,
    digests: Annotated[
        Path, typer.Option(help="JSON file to write: step -> registry/step@sha256:...")
    ] = Path("images.json"),
    tls_verify: Annotated[bool, typer.Option(help="verify the registry's TLS")] = True,
) -> None:
    """Push step images under their content tags; a tag the registry has is not pushed again."""
    from mlrig.images import find_engine, step_names
    from mlrig.registry import push_step_images, write_digests
    from mlrig.settings import load_settings

    settings = load_settings()
    engine = find_engine(settings)
    steps = step or step_names(settings.root)
    with console.status("building what is missing, then pushing"):
        images = push_step_images(settings, engine, registry, steps, tls_verify)
    write_digests(images, digests)
    for image in images:
        state = "pushed" if image.pushed else "already in the registry"
        typer.echo(f"{image.reference}  {image.digest}  {state}")
    typer.echo(f"Digests: {digests}")


@ci_app.command("note")
@exits_cleanly
def ci_note_command(
    target: Annotated[
        str, typer.Option(help="the revision to diff against (origin/<target branch>)")
    ],
) -> None:
    """The merge request note: params and metrics diffs, experiment table, champion decision.

    Written to reports/merge-request-note.md, and posted on the merge request when
    MLRIG_GITLAB_TOKEN (a project access token, api scope) is set.
    """
    from mlrig.ci import write_and_post_note
    from mlrig.settings import load_settings

    path, posted = write_and_post_note(load_settings().root, target)
    if posted:
        typer.echo(f"Note posted on {posted}; also in {path}")
    else:
        typer.echo(f"No MLRIG_GITLAB_TOKEN: the note is only in {path} (a job artifact)")


@images_app.command("wheels")
@exits_cleanly
def images_wheels_command() -> None:
    """Fill the wheelhouse (.mlrig/wheels) that image builds install from, offline."""
    from mlrig.images import BuildLayout, make_wheelhouse
    from mlrig.settings import load_settings

    with console.status("downloading and building wheels"):
        count = make_wheelhouse(BuildLayout(load_settings().root))
    typer.echo(f"{count} wheels in .mlrig/wheels")


@images_app.command("base-os")
@exits_cleanly
def images_base_os_command() -> None:
    """Make a Debian bookworm + Python 3.11 base image with debootstrap (needs root)."""
    from mlrig.images import find_engine, make_os_image
    from mlrig.settings import load_settings

    settings = load_settings()
    with console.status("debootstrap bookworm (a few minutes)"):
        reference = make_os_image(settings, find_engine(settings))
    typer.echo(f"{reference}: make images now builds on it")


@chart_app.command("play")
@exits_cleanly
def chart_play_command() -> None:
    """Render helm/mlrig with helm/mlrig/local/podman-values.yaml and start its pods."""
    from mlrig.kube_play import PlayLayout, up
    from mlrig.settings import load_settings

    settings = load_settings()
    with console.status("podman kube play of the chart, then waiting for MLflow"):
        played = up(settings.root)
    typer.echo(
        f"Played {', '.join(played.workloads)} in {played.play_seconds}s "
        f"(MLflow ready after {played.ready_seconds}s); not played: {', '.join(played.skipped)}"
    )
    typer.echo(
        f"MLflow {played.environment['MLFLOW_TRACKING_URI']}, S3 "
        f"{played.environment['AWS_ENDPOINT_URL']}; client settings in "
        f"{PlayLayout(settings.root).client_env}"
    )


@chart_app.command("down")
@exits_cleanly
def chart_down_command() -> None:
    """Remove the chart's pods, their volumes and Secrets (mlrig chart play undone)."""
    from mlrig.kube_play import PlayLayout, play_down
    from mlrig.settings import load_settings

    play_down(PlayLayout(load_settings().root))
    typer.echo("The chart's pods, volumes and secrets are removed.")


def use_stack(name: str) -> None:
    """Load a stack's client settings into this process's environment (12-factor)."""
    import os

    from mlrig.errors import ConfigError
    from mlrig.settings import load_settings
    from mlrig.stack.manager import load_stack_environment

    if name != "local":
        raise ConfigError(
            f"Unknown stack {name!r}: `--stack local` is the one mlrig starts. For other servers "
            "set MLFLOW_TRACKING_URI, AWS_* and MLRIG_DVC_REMOTE in the environment instead."
        )
    os.environ.update(load_stack_environment(load_settings()))


@app.command()
@exits_cleanly
def report(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report paths as JSON.")
    ] = False,
) -> None:
    """Bring the report up to date (dvc repro report) and print where it is."""
    from mlrig.dvc import run_dvc
    from mlrig.pipeline import REPORT_DIR, exclusive_run
    from mlrig.settings import load_settings

    settings = load_settings()
    with exclusive_run(settings, "mlrig report"), console.status("updating the report"):
        run_dvc(
            ["repro", "report"],
            settings.root,
            dict(os.environ),
            settings.state_dir / "logs" / "report.log",
            lambda stage: None,
        )
    paths = {kind: str(settings.root / REPORT_DIR / f"report.{kind}") for kind in ("md", "html")}
    typer.echo(json.dumps(paths) if as_json else f"Report: {paths['html']}\n        {paths['md']}")


@app.command()
@exits_cleanly
def compare(
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
    params_file: Annotated[
        Path, typer.Option("--params", help="params.yaml to read experiments from.")
    ] = Path("params.yaml"),
) -> None:
    """Print the experiment table: params, held-out metrics, fit time, MLflow run."""
    from mlrig.metrics import LOWER_IS_BETTER
    from mlrig.params import TrainParams, load_section
    from mlrig.results import load_results, read_champion
    from mlrig.settings import load_settings

    root = load_settings().root
    names = list(load_section(root / params_file, "train", TrainParams).experiments)
    results = load_results(root / "outputs/train", root / "outputs/evaluate", names)
    champion = read_champion(root / "outputs/register")
    if as_json:
        rows = [
            {
                "experiment": result.name,
                "family": result.record.family,
                "params": result.record.params,
                "metrics": result.metrics,
                "fit_seconds": result.record.fit_seconds,
                "mlflow_run_id": result.record.mlflow_run_id,
                "clearml_task_id": result.record.clearml_task_id,
                "champion": bool(champion and champion.experiment == result.name),
            }
            for result in results
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    metric_names = list(results[0].metrics)
    table = Table(title="experiments (held-out test set)")
    for column in ("experiment", "family", "params"):
        table.add_column(column)
    for metric in metric_names:
        table.add_column(f"{metric} {'↓' if metric in LOWER_IS_BETTER else '↑'}", justify="right")
    table.add_column("fit (s)", justify="right")
    table.add_column("MLflow run")
    for result in results:
        crown = " 🏆" if champion and champion.experiment == result.name else ""
        params_text = ", ".join(
            f"{k}={v}" for k, v in result.record.params.items() if v is not None
        )
        table.add_row(
            result.name + crown,
            result.record.family,
            params_text or "defaults",
            *(f"{result.metrics[m]:.4f}" for m in metric_names),
            f"{result.record.fit_seconds:.3f}",
            result.record.mlflow_run_id[:12],
        )
    # a pipe gets the whole table rather than columns cut to 80 characters
    Console(width=None if sys.stdout.isatty() else 240).print(table)


@app.command()
@exits_cleanly
def doctor(
    stack: Annotated[
        str | None,
        typer.Option(help="Check a stack: `local` loads the settings of `mlrig stack up`."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Check the toolchain, the DVC remote, MLflow and ClearML; exit 1 if a required one fails."""
    from mlrig.doctor import run_doctor
    from mlrig.settings import load_settings

    if stack is not None:
        use_stack(stack)
    with console.status("checking"):
        checks = run_doctor(load_settings())
    if as_json:
        typer.echo(json.dumps([check.model_dump() for check in checks], indent=2))
    else:
        for check in checks:
            mark = "✓" if check.passed else ("✗" if check.required else "!")
            fix = f"\n    fix: {check.fix}" if not check.passed and check.fix else ""
            typer.echo(f"{mark} {check.name}: {check.detail}{fix}")
    if any(check.required and not check.passed for check in checks):
        raise typer.Exit(1)


def submit_to_clearml(
    settings: Settings, queue: str | None, images: list[Path], wait: bool, as_json: bool
) -> None:
    """Compile dvc.yaml and enqueue it as a ClearML pipeline; print its id (and follow it)."""
    from mlrig.pipeline import exclusive_run

    # it reads the checkout's DVC state, and with --wait writes dvc.lock and the outputs
    with exclusive_run(settings, "mlrig clearml pipeline"):
        submit_holding_the_checkout(settings, queue, images, wait, as_json)


def submit_holding_the_checkout(
    settings: Settings, queue: str | None, images: list[Path], wait: bool, as_json: bool
) -> None:
    """submit_to_clearml's work, once it holds the run lock."""
    from mlrig.clearml_pipeline import (
        follow_pipeline,
        prepare_submission,
        require_server,
        submit_pipeline,
        take_results,
    )

    require_server(os.environ)  # before the images are resolved: say what is missing first
    description = compiled_pipeline(settings, queue, images)
    with console.status("uploading the workspace, reading the stages' records on the remote"):
        description = prepare_submission(settings, description)
    submitted = [step.name for step in description.submitted()]
    recorded = [step.name for step in description.steps if step.recorded]
    if submitted:
        with console.status(
            f"submitting to ClearML (controller on {settings.clearml_services_queue})"
        ):
            pipeline_id = submit_pipeline(settings, description, settings.clearml_services_queue)
        message = (
            f"ClearML pipeline {pipeline_id} submitted: {counted(len(submitted), 'step')}, "
            f"{counted(len(recorded), 'stage')} already on the remote."
        )
    else:
        pipeline_id = None
        message = "Every stage's result for these inputs is on the DVC remote: nothing submitted."
    summary = {"pipeline_id": pipeline_id, "submitted": submitted, "recorded": recorded}
    typer.echo(json.dumps(summary) if as_json else message)
    if not wait:
        return
    if pipeline_id:
        follow_pipeline(pipeline_id)
    with console.status("merging the steps' results into dvc.lock, pulling their outputs"):
        take_results(settings, description.steps)
    console.print("dvc.lock and the outputs are as the cluster left them: commit dvc.lock.")


def compiled_pipeline(
    settings: Settings, queue: str | None, images: list[Path]
) -> PipelineDescription:
    """dvc.yaml compiled, the steps pushed by a build job in their images by digest."""
    from mlrig.clearml_pipeline import describe_pipeline
    from mlrig.registry import read_digests

    pushed = read_digests(images)
    with console.status("compiling dvc.yaml into a ClearML pipeline"):
        description = describe_pipeline(settings, default_queue=queue, pushed_images=pushed)
    say_unbuilt_images(settings, description)
    return description


def say_unbuilt_images(settings: Settings, description: PipelineDescription) -> None:
    """Name, on stderr, the steps whose image is neither built here nor pushed by digest."""
    from mlrig.images import engine_if_any, unbuilt_images

    unbuilt = unbuilt_images(settings, {step.step: step.image for step in description.steps})
    if not unbuilt:
        return
    where = "" if engine_if_any(settings) else " (no container engine here)"
    typer.echo(
        f"Not built on this machine{where}: the image(s) of {', '.join(unbuilt)}. `make images` "
        "builds them where podman or docker runs; CI's build jobs push them, and --images "
        "passes their digests.",
        err=True,
    )


@clearml_app.command("pipeline")
@exits_cleanly
def clearml_pipeline(
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the compiled pipeline instead of submitting it to ClearML."
        ),
    ] = False,
    queue: Annotated[
        str | None,
        typer.Option(help="The queue of the steps (default MLRIG_CLEARML_QUEUE)."),
    ] = None,
    images: ImageDigestsOption = None,
    wait: WaitOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON.")] = False,
) -> None:
    """dvc.yaml as a ClearML pipeline: each stage a step in its image, cached by its data."""
    from mlrig.settings import load_settings

    settings = load_settings()
    if not dry_run:
        submit_to_clearml(settings, queue, images or [], wait, as_json)
        return
    description = compiled_pipeline(settings, queue, images or [])
    if as_json:
        typer.echo(description.model_dump_json(indent=2))
        return
    table = Table(title=f"ClearML pipeline {description.name} {description.version}")
    for column in ("step", "parents", "image", "queue", "deps hashed", "params", "input key"):
        table.add_column(column)
    for step in description.steps:
        hashed = sum(value is not None for value in step.deps.values())
        table.add_row(
            step.name,
            ", ".join(step.parents) or "-",
            step.image,
            step.queue,
            f"{hashed}/{len(step.deps)}",
            ", ".join(step.params) or "-",
            step.input_key[:12],
        )
    Console(width=None if sys.stdout.isatty() else 240).print(table)


@clearml_app.command("list")
@exits_cleanly
def clearml_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print the sessions as JSON.")] = False,
) -> None:
    """List the offline ClearML sessions recorded in this project."""
    from mlrig.clearml_sessions import list_sessions
    from mlrig.settings import load_settings

    sessions = list_sessions(load_settings())
    if as_json:
        typer.echo(json.dumps([session.model_dump() for session in sessions], indent=2))
        return
    for session in sessions:
        state = f"imported as {session.imported_as}" if session.imported_as else "not imported"
        typer.echo(f"{session.offline_id}  {state}")
    typer.echo(counted(len(sessions), "offline session"))


@clearml_app.command("prune")
@exits_cleanly
def clearml_prune(
    keep: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="How many of the newest to keep (default MLRIG_CLEARML_KEEP_SESSIONS; 0 keeps "
            "every one).",
        ),
    ] = None,
) -> None:
    """Delete the oldest offline ClearML sessions (mlrig run does so past the limit)."""
    from mlrig.clearml_sessions import prune_sessions
    from mlrig.settings import load_settings

    pruned = prune_sessions(load_settings(), keep)
    typer.echo(pruned.message() or f"Nothing to drop: {counted(pruned.kept, 'offline session')}.")


@clearml_app.command("import")
@exits_cleanly
def clearml_import() -> None:
    """Upload the offline sessions to the configured ClearML server (CLEARML_API_*)."""
    from mlrig.clearml_sessions import import_sessions
    from mlrig.settings import load_settings

    imported = import_sessions(load_settings())
    for session in imported:
        typer.echo(f"{session.offline_id} -> {session.imported_as}")
    typer.echo(f"{counted(len(imported), 'session')} imported")


@stack_app.command("up")
@exits_cleanly
def stack_up_command() -> None:
    """Start PostgreSQL, the S3 endpoint and the MLflow server (data in .mlrig/stack)."""
    from mlrig.settings import load_settings
    from mlrig.stack.manager import stack_up

    with console.status("starting the stack") as status:
        state = stack_up(load_settings(), on_step=lambda step: status.update(f"starting {step}"))
    typer.echo(
        redact(
            f"Stack up: MLflow {state.mlflow_uri}, S3 {state.s3_endpoint} (SeaweedFS), "
            f"PostgreSQL 127.0.0.1:{state.postgres_port}"
        )
    )
    typer.echo('Point a shell at it: eval "$(mlrig stack env)"; run on it: mlrig run --stack local')


@stack_app.command("down")
@exits_cleanly
def stack_down_command() -> None:
    """Stop the stack's services; their data stays in .mlrig/stack."""
    from mlrig.settings import load_settings
    from mlrig.stack.manager import stack_down

    stopped = stack_down(load_settings())
    typer.echo(f"Stopped: {', '.join(stopped)}" if stopped else "Nothing was running.")


@stack_app.command("status")
@exits_cleanly
def stack_status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show each service, where it listens and whether it is healthy (exit 1 if not)."""
    from mlrig.settings import load_settings
    from mlrig.stack.manager import stack_status

    services = stack_status(load_settings())
    if as_json:
        typer.echo(json.dumps([service.model_dump() for service in services], indent=2))
    else:
        table = Table(title="mlrig local stack")
        for column in ("service", "url", "pid", "health"):
            table.add_column(column)
        for service in services:
            health = "[green]healthy[/]" if service.healthy else "[red]down[/]"
            table.add_row(service.name, redact(service.url), str(service.pid or "-"), health)
        Console().print(table)
    if not all(service.healthy for service in services):
        raise typer.Exit(1)


@stack_app.command("env")
@exits_cleanly
def stack_env_command() -> None:
    """Print shell lines pointing MLflow, DVC and boto3 at the stack: eval "$(mlrig stack env)"."""
    from mlrig.settings import load_settings
    from mlrig.stack.manager import stack_env_lines

    typer.echo(stack_env_lines(load_settings()))
