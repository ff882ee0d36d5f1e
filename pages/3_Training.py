"""Training: validate a dataset, estimate and launch a background run, watch it live, cancel, resume or promote it."""

import pandas as pd
import streamlit as st

import ui
from radiology import charts, registry
from radiology.errors import RadiologyError
from radiology.evaluation import worse_on_the_same_images
from radiology.jobs import LIVE_STATES
from training import clock, distribute, estimate, launch
from training.config import (
    COMPUTE_CHOICES,
    DISTRIBUTE_CHOICES,
    TRAINABLE_LAYERS,
    TRAINABLE_LAYERS_WHY,
    TrainConfig,
    defaults,
    field_help,
)

ui.page_header("Training")
DEFAULT, HELP = defaults(), field_help()  # every default and help below comes from TrainConfig

st.header("Dataset")
folder = ui.dataset_picker("train")
c1, c2, c3 = st.columns(3)
seed = c1.number_input("Seed", 0, 2**31 - 1, **ui.remembered("train_seed", DEFAULT["seed"]), help=HELP["seed"])
_, default_val, default_test = (round(f * 100) for f in DEFAULT["fractions"])
val_pct = c2.number_input(
    "Validation %",
    0,
    90,
    **ui.remembered("train_val_pct", default_val),
    help="Share split off for validation, for class folders only",
)
test_pct = c3.number_input(
    "Test %",
    0,
    90,
    **ui.remembered("train_test_pct", default_test),
    help="Share split off for testing, for class folders only",
)
fractions = ((100 - val_pct - test_pct) / 100, val_pct / 100, test_pct / 100)
if folder is not None:
    try:
        report = ui.dataset_report(str(folder), int(seed), fractions, ui.dataset_key(folder), ui.report_image_size())
        ui.show_validation(report)
    except RadiologyError as exc:
        st.error(str(exc))
        folder = None

st.header("Launch")
runs = registry.list_runs(ui.runs_dir(), include_bundled=True)
finished = [r for r in runs if r.state == "succeeded" and r.has_model]
st.caption(f"Trains with {ui.cached_device()}.")
ALL_LAYERS = TRAINABLE_LAYERS[1]


def train_every_layer_from_scratch():
    """Choosing weights none makes every layer trainable: a frozen layer would keep its random weights."""
    if st.session_state["train_weights"] == "none":
        st.session_state["train_trainable"] = ALL_LAYERS


starts = {"imagenet": "imagenet", "none": "none", **{f"run {r.id}": str(r.dir) for r in finished}}
c1, c2 = st.columns([1, 2])
weights = c1.selectbox(
    "Initial weights",
    list(starts),
    **ui.remembered("train_weights", DEFAULT["weights"], options=list(starts)),
    on_change=train_every_layer_from_scratch,
    help="ImageNet needs the network once; a run (of any image size) fine-tunes it",
)
with c2:
    if starts[weights] == "imagenet":
        ui.imagenet_panel("train_imagenet")
    elif starts[weights] == "none":
        st.caption(f"From scratch: every layer starts random, so all {ALL_LAYERS} layers should train (set below).")
    else:
        st.caption("Fine-tunes that run's model: its layers are copied by name, whatever its image size.")
with st.form("launch", enter_to_submit=False):  # Enter in a half-edited number field must not start work
    c1, c2, c3, c4 = st.columns(4)
    epochs = c1.number_input("Epochs", 1, 500, **ui.remembered("train_epochs", DEFAULT["epochs"]), help=HELP["epochs"])
    batch_size = c2.number_input(
        "Batch size", 1, 1024, **ui.remembered("train_batch_size", DEFAULT["batch_size"]), help=HELP["batch_size"]
    )
    lr = c3.number_input(
        "Learning rate", 1e-7, 1e-1, **ui.remembered("train_lr", DEFAULT["lr"]), format="%.1e", help=HELP["lr"]
    )
    image_size = c4.number_input(
        "Image size (px)",
        32,
        1024,
        **ui.remembered("train_image_size", DEFAULT["image_size"]),
        step=32,
        help=HELP["image_size"],
    )
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    trainable = c1.number_input(
        "Trainable VGG16 layers",
        *TRAINABLE_LAYERS,
        **ui.remembered("train_trainable", DEFAULT["trainable_layers"]),
        help=HELP["trainable_layers"],
    )
    c2.caption(TRAINABLE_LAYERS_WHY[0].upper() + TRAINABLE_LAYERS_WHY[1:] + ".")
    c1, c2, c3 = st.columns(3)
    augment = c3.toggle(
        "Augmentation (flip, ±15° rotation)",
        **ui.remembered("train_augment", DEFAULT["augment"]),
        help=HELP["augment"],
    )
    mixed = c3.toggle(
        "Allow bfloat16", **ui.remembered("train_mixed", DEFAULT["mixed_precision"]), help=HELP["mixed_precision"]
    )
    class_weights = c3.toggle(
        "Class weights", **ui.remembered("train_class_weights", DEFAULT["class_weights"]), help=HELP["class_weights"]
    )
    compute = c1.selectbox(
        "Compute",
        COMPUTE_CHOICES,
        **ui.remembered("train_compute", DEFAULT["compute"], options=COMPUTE_CHOICES),
        help=HELP["compute"] + " The choice is then reused by runs with these settings.",
    )
    workers = c2.number_input(
        "Loader threads", 1, 64, **ui.remembered("train_workers", DEFAULT["workers"]), help=HELP["workers"]
    )
    patience = c1.number_input(
        "Plateau patience (epochs)",
        1,
        50,
        **ui.remembered("train_patience", DEFAULT["lr_patience"]),
        help=HELP["lr_patience"],
    )
    distribute_choice = c2.selectbox(
        "Distribute",
        DISTRIBUTE_CHOICES,
        **ui.remembered("train_distribute", DEFAULT["distribute"], options=DISTRIBUTE_CHOICES),
        help=HELP["distribute"],
    )
    st.caption(estimate.size_tradeoff(int(image_size)))
    b1, b2 = st.columns(2)
    estimate_clicked = b1.form_submit_button("Estimate duration", disabled=folder is None)
    submitted = b2.form_submit_button("Launch training", type="primary", disabled=folder is None)

config = None
if folder is not None:
    try:
        config = TrainConfig(
            data=str(folder),
            epochs=int(epochs),
            batch_size=int(batch_size),
            lr=float(lr),
            trainable_layers=int(trainable),
            weights=starts[weights],
            seed=int(seed),
            fractions=fractions,
            augment=augment,
            workers=int(workers),
            class_weights=class_weights,
            lr_patience=int(patience),
            mixed_precision=mixed,
            image_size=int(image_size),
            compute=compute,
            runs_dir=str(ui.runs_dir()),
            distribute=distribute_choice,
        )
        backend = distribute.training_backend()
        mesh = distribute.resolve(
            config.distribute, config.batch_size, backend=backend, devices=ui.cached_device_count(backend)
        )
        st.caption(f"Trains on {mesh.describe()}.")
    except (ValueError, RadiologyError) as exc:
        st.error(str(exc))
        config = None
for warning in config.warnings() if config is not None else []:
    st.warning(warning)
if config is not None and estimate_clicked:
    try:
        launch.estimate(config)
    except RadiologyError as exc:
        st.error(str(exc))
if config is not None and submitted:
    try:
        started = launch.launch(config)
        st.success(f"Launched run {started.id}.")
    except RadiologyError as exc:
        st.error(str(exc))


@st.fragment(run_every=2.0)
def estimate_panel(config: TrainConfig):
    """The duration estimate of these settings on this machine: measured, being measured, or not yet."""
    record = estimate.read_estimate(config)
    measured = estimate.estimate_from(record)
    if measured is not None:
        st.info(estimate.describe(measured, config.epochs))
        st.caption(f"How: {measured.method()}. The run reuses this compute choice.")
    elif record and record.get("state") in LIVE_STATES:
        st.info(f"Estimating: {record.get('phase', 'starting')}… (a few real training steps; a few minutes at 224 px)")
    elif record and record.get("state") == "failed":
        st.error(f"The estimate failed: {record.get('error')}")
    else:
        st.caption("No estimate for these settings yet: **Estimate duration** times a few real training steps here.")


if config is not None:
    estimate_panel(config)


@st.fragment(run_every=1.0)
def live_run():
    """Re-reads the run folder every second: progress, curves, log; re-attaches after a restart."""
    run = registry.running_run(ui.runs_dir())
    was_live = st.session_state.get("_live_run")
    if run is None:
        if was_live:
            st.session_state["_live_run"] = None
            st.rerun()  # refresh the finished-runs table below
        timing = estimate.running_estimate(ui.runs_dir())
        if timing is not None:
            cfg = timing.get("config") or {}
            st.info(
                f"A duration estimate is running: {timing.get('phase', 'starting')}… (`{cfg.get('data')}`, "
                f"{cfg.get('image_size')} px, batch {cfg.get('batch_size')}). Launch waits for it: one training or "
                "estimate runs at a time, so that neither slows the other.",
                icon=":material/timer:",
            )
            return
        st.caption("No training is running.")
        last = registry.last_run(ui.runs_dir(), kind="training")
        if last is not None:
            acc = (last.metrics or {}).get("accuracy")
            result = f", accuracy {acc:.1%} on its held-out test split" if acc is not None else ""
            message = f"Last run {last.id}: {last.state}{result}" + (f" ({last.error})" if last.error else "")
            (st.success if last.state == "succeeded" else st.info)(message)
        return
    st.session_state["_live_run"] = run.id
    p = run.progress()
    st.subheader(f"Run {run.id}: {'cancelling…' if run.cancel_requested else p.get('phase', run.state)}")
    if p.get("device"):
        mesh = f", {p['mesh']}" if p.get("mesh") else ""
        st.caption(f"{p['device']}{mesh}, computing in {p.get('compute', '…')}")
    overall, within = run.progress_fractions()
    batch, batches = p.get("batch", 0), p.get("batches", 0)
    if p.get("phase") == "caching":
        st.progress(within, text=f"Reading images: {batch} of {batches}")
    else:
        left = f", about {clock.format_duration(p['run_left_s'])} left" if p.get("run_left_s") is not None else ""
        st.progress(overall, text=f"Epoch {p.get('epoch', 0)} of {p.get('epochs', run.config.get('epochs', 1))}{left}")
        rate = f", {p['images_per_s']:.1f} img/s" if p.get("images_per_s") else ""
        epoch_left = f", {clock.format_duration(p['epoch_left_s'])} left" if p.get("epoch_left_s") is not None else ""
        st.progress(within, text=f"Batch {batch} of {batches}{rate}{epoch_left}")
    history = run.history()
    if history:
        st.plotly_chart(charts.history_figure(history), key=f"live-{run.id}-{len(history)}")
    st.code(run.log_tail(15) or "(no log yet)", language=None)
    if not run.cancel_requested and st.button("Cancel run", key=f"cancel-{run.id}"):
        launch.cancel(run)
    if run.cancel_requested:  # read from the run folder: it stays until the run has stopped
        st.info(
            "Cancelling… the run stops after its current batch and keeps its last completed epoch; **Resume** "
            "below continues it later.",
            icon=":material/hourglass_top:",
        )


st.header("Current run")
live_run()

st.header("Runs")
ui.import_messages("runs_import")
for kind, message in st.session_state.pop("_runs_outcome", []):  # of a promotion or resume, before the rerun
    getattr(st, kind)(message)
with st.expander("Import a model file (.keras or Keras 2 .h5) as a run"):
    ui.import_model_panel("runs_import")
if not runs:
    st.caption("No runs yet.")
    st.stop()
active = registry.active_run(ui.runs_dir())
rows = []
for r in runs:
    m = r.metrics or {}
    rows.append(
        {
            "run": r.id,
            "kind": r.kind,
            "status": r.state,
            "active": active is not None and r.id == active.id,
            "started": (r.status.get("started") or "")[:19].replace("T", " "),
            "epochs": r.epochs_summary(),
            "data": r.config.get("data"),
            "test accuracy (at training)": m.get("accuracy"),
            "test macro F1 (at training)": m.get("macro_f1"),
            "test ECE (at training)": (m.get("calibration") or {}).get("ece"),
            "error": r.error or "",
        }
    )
st.dataframe(pd.DataFrame(rows), hide_index=True)
st.caption(
    "Test figures are each run's own evaluation at the end of training, on the test split held out from its "
    "training data; later evaluations, on other data or splits, are listed on the Evaluation page."
)

stopped = [r for r in runs if r.id != registry.BUNDLED_ID and registry.resumable(r) is None]
if stopped:
    c1, c2 = st.columns([3, 1])
    chosen = c1.selectbox(
        "Run to resume", [r.id for r in stopped], help="Cancelled, failed or killed runs go on from their last epoch"
    )
    if c2.button("Resume"):
        try:
            launch.resume(registry.get_run(chosen, ui.runs_dir()))
        except (RadiologyError, KeyError) as exc:
            st.error(str(exc))
        else:  # its queued state and fresh progress are on disk: the whole page shows them now, not in a second
            st.session_state["_runs_outcome"] = [("success", f"Resumed run {chosen}.")]
            st.rerun()

promotable = [r.id for r in finished]


def promote(run_id: str) -> None:
    """Makes the run the active model, then reruns the page, whose runs table then ticks it."""
    try:
        registry.set_active(registry.get_run(run_id, ui.runs_dir()), ui.runs_dir())
    except (KeyError, ValueError) as exc:
        st.error(str(exc))
        return
    st.session_state.pop("_promote_asked", None)
    st.session_state["_runs_outcome"] = [
        ("success", f"{run_id} is now the active model. Classify uses it from now on.")
    ]
    st.rerun()


if promotable:
    c1, c2 = st.columns([3, 1])
    chosen = c1.selectbox("Run to promote", promotable)
    if c2.button("Promote", type="primary"):
        candidate = registry.get_run(chosen, ui.runs_dir())
        worse = worse_on_the_same_images(candidate, active) if active is not None and active.id != chosen else None
        if worse is None:
            promote(chosen)
        else:
            st.session_state["_promote_asked"] = (chosen, worse)
    asked = st.session_state.get("_promote_asked")
    if asked and asked[0] == chosen and active is not None:
        st.warning(f"Promote {chosen} in place of {active.id}? It measured worse: {asked[1]}.")
        b1, b2, _ = st.columns([1, 1, 2])
        if b1.button(f"Promote {chosen} anyway"):
            promote(chosen)
        if b2.button(f"Keep {active.id}"):
            st.session_state.pop("_promote_asked", None)
            st.rerun()
