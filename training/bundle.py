"""Bundling a trained run as the shipped default model: ``models/default/`` with its files and model card.

``python -m training.bundle --model RUN --data DIR --phase DIR --machine TEXT [--phase DIR --machine TEXT ...]
[--audit FILE]``

The bundle is a run folder in the registry's layout (``status.json``, ``config.json``, ``model.keras``,
``metrics.json``, ``predictions.csv``, ``history.csv``) plus ``card.json`` (the summary Home shows) and
``MODEL_CARD.md``. It holds no path of the machine that built it: the data is named by its folder name and the
predictions give paths relative to it. Each phase folder is a run folder of the trainer (or a copy of its
``config.json``, ``history.csv`` and ``metrics.json``), in training order; the last is usually ``--model``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from radiology import calibration
from radiology.errors import RadiologyError
from radiology.fsutil import atomic_write_text, write_csv_atomic, write_json_atomic

# what the default model is asked to reach on the test split; the card says by how much it falls short
TARGETS = {"accuracy": 0.93, "covid recall": 0.95, "macro F1": 0.93, "ECE after calibration": 0.03}
FLAG_FOR_FIELD = {  # TrainConfig fields that reproduce a phase, as the training CLI spells them
    "image_size": "--image-size",
    "weights": "--weights",
    "trainable_layers": "--trainable-layers",
    "compute": "--compute",
    "epochs": "--epochs",
    "lr": "--lr",
    "batch_size": "--batch-size",
}


def portable_config(config: dict, data_name: str) -> dict:
    """A training config without machine paths: the data named by ``data_name``, runs under ``runs``."""
    out = dict(config)
    out["data"] = data_name
    out["runs_dir"] = "runs"
    out["cache_dir"] = ""
    weights = str(out.get("weights", ""))
    if "/" in weights and not weights.startswith("runs/"):
        path = Path(weights)  # a run folder or model file of the machine that trained it
        out["weights"] = f"runs/{path.name}" if path.suffix != ".keras" else f"runs/{path.parent.name}/{path.name}"
    return out


def phase_command(config: dict, data_name: str) -> str:
    """The training command that reproduces a phase from its config."""
    parts = ["nice -n 19 python -m training", f"--data {data_name}"]
    parts += [f"{flag} {config[field]}" for field, flag in FLAG_FOR_FIELD.items() if field in config]
    if config.get("class_weights"):
        parts.append("--class-weights")
    if config.get("augment") is False:
        parts.append("--no-augment")
    if config.get("seed", 42) != 42:
        parts.append(f"--seed {config['seed']}")
    return " ".join(parts)


def read_phase(folder: str | Path, machine: str) -> dict:
    """One training phase from its run folder: config, history, test metrics and the machine it ran on.

    Raises:
        RadiologyError: the folder lacks ``config.json`` or ``history.csv``.
    """
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
        history = list(csv.DictReader((folder / "history.csv").open()))
    except (OSError, ValueError) as exc:
        raise RadiologyError(f"{folder} is not a training run folder with config.json and history.csv: {exc}") from exc
    if not history:
        raise RadiologyError(f"{folder}/history.csv has no epochs")
    try:
        test = json.loads((folder / "metrics.json").read_text())
        predictions = {r["path"]: r["predicted"] for r in csv.DictReader((folder / "predictions.csv").open())}
    except (OSError, ValueError, KeyError):
        test, predictions = None, {}
    return {
        "folder": folder,
        "config": config,
        "history": history,
        "test": test,
        "predictions": predictions,  # the trainer's test labels from the float32 best checkpoint
        "machine": machine,
    }


def merged_history(phases: list[dict]) -> list[dict]:
    """Every phase's epochs in one table, with ``phase`` and ``image_size`` columns."""
    rows = []
    for i, p in enumerate(phases, 1):
        for r in p["history"]:
            rows.append({"phase": i, "image_size": p["config"].get("image_size"), **r})
    return rows


def shortfalls(result: dict) -> list[dict]:
    """Each target with the measured value, its CI where there is one, and whether it is met."""
    ci = result.get("ci", {})
    measured = {
        "accuracy": (result["accuracy"], ci.get("accuracy")),
        "covid recall": (result["report"]["covid"]["recall"], ci.get("recall", {}).get("covid")),
        "macro F1": (result["macro_f1"], ci.get("macro_f1")),
        "ECE after calibration": (result["calibration"]["ece"], None),
    }
    out = []
    for name, target in TARGETS.items():
        value, interval = measured[name]
        met = value <= target if name.startswith("ECE") else value >= target
        out.append({"target": name, "goal": target, "value": value, "ci": interval, "met": met})
    return out


def bundle(
    model_dir: str | Path,
    data: str | Path,
    phases: list[dict],
    out: str | Path,
    *,
    gate_report: dict | None = None,
    notes: str = "",
    cache_dir: str | None = None,
    audit: dict | None = None,
    progress=print,
) -> dict:
    """Writes the bundle of a trained, calibrated and gated run into ``out``; returns its test metrics.

    ``audit`` is a trust audit of the model (``python -m radiology audit --json``); the card then reports it.

    Raises:
        RadiologyError: the run's model has no temperature or no gate statistics, or the data does not split.
    """
    from radiology.confounding import source_predictability
    from radiology.datasets import source_counts
    from radiology.evaluation import evaluate_samples, write_evaluation
    from radiology.model import load_model, save_model
    from radiology.splits import check_splits, training_split

    model_dir, out = Path(model_dir), Path(out)
    full = load_model(model_dir / "model.keras" if model_dir.is_dir() else model_dir)
    meta = full.metadata
    if meta.temperature is None or meta.ood is None:
        raise RadiologyError(
            f"{model_dir} needs a temperature and gate statistics before it ships: run "
            "'python -m radiology calibrate' and 'python -m radiology fit-ood' on it"
        )
    seed, fractions = training_split(meta.train_config, seed=None)
    checked = check_splits(data, seed=seed, fractions=fractions, spec=meta.preprocess, cache_dir=cache_dir)
    dataset, decoded = checked.dataset, checked.decoded
    data_name = Path(data).resolve().name
    config = portable_config(meta.train_config, data_name)

    progress(f"saving float16 weights to {out / 'model.keras'}")
    save_model(full.model, out / "model.keras", replace(meta, train_config=config), weights_dtype="float16")
    shipped = load_model(out / "model.keras")
    test = dataset.splits["test"]
    progress(f"evaluating the float16 model on {len(test)} test images")
    result, rows = evaluate_samples(shipped, test, decoded, root=dataset.root, bf16=True)
    result.update(data_root=data_name, split="test", split_method=dataset.split_method)
    reference = phases[-1]["predictions"] if phases else {}
    for row in rows:  # temperature scaling keeps the argmax, so the trainer's labels compare as they are
        row["predicted_float32"] = reference.get(row["path"], "")
    compared = [r for r in rows if r["predicted_float32"]]
    result["float16_agreement"] = (
        float(np.mean([r["predicted"] == r["predicted_float32"] for r in compared])) if compared else None
    )
    write_evaluation(out, result, rows)

    history = merged_history(phases)
    write_csv_atomic(out / "history.csv", history)
    write_json_atomic(out / "config.json", config)
    seconds = sum(float(r.get("seconds") or 0) for r in history)
    write_json_atomic(
        out / "status.json",
        {"state": "succeeded", "kind": "training", "finished": meta.created, "epochs_done": len(history)},
    )
    progress("measuring how well the source is predicted from thumbnails")
    counts = {label: dict(c) for label, c in source_counts(dataset).items()}
    confounding = source_predictability(dataset.samples(), decoded)
    n_sources = len({s.source for s in dataset.samples() if s.source})
    sizes = dict.fromkeys(f"{p['config'].get('image_size')} px" for p in phases)
    start = phases[0]["config"].get("weights") if phases else config.get("weights")
    card = {
        "data_name": data_name,
        "data": (
            f"{data_name}: {len(dataset.samples()):,} chest X-rays from {n_sources} public collections; "
            f"{dataset.split_method} "
            f"({len(dataset.splits['train']):,} / {len(dataset.splits['val']):,} / {len(test):,})"
        ),
        "recipe": (
            f"VGG16 {'from scratch' if start == 'none' else f'from {start} weights'}, "
            f"{config.get('trainable_layers')} layers trainable, {' then '.join(sizes)}, "
            f"{len(history)} epochs in {len(phases)} phases ({seconds / 3600:.1f} h of training); "
            f"{calibration.describe(meta.temperature)}"
        ),
        "limits": LIMITS + ([FROM_SCRATCH] if start == "none" else []),
        "targets": shortfalls(result),
        "counts": counts,
        "confounding": confounding,
    }
    write_json_atomic(out / "card.json", card)
    write_card(out, phases, gate_report=gate_report, notes=notes, audit=audit)
    return result


def portable_audit(audit: dict) -> dict:
    """A trust audit without machine paths: its data named by its folder name, its model by nothing (the bundle).

    Raises:
        RadiologyError: the audit lacks its ``faithfulness`` or ``shortcut`` object.
    """
    if not isinstance(audit, dict) or not {"faithfulness", "shortcut"} <= set(audit):
        found = sorted(audit) if isinstance(audit, dict) else type(audit).__name__
        raise RadiologyError(
            f"expected a trust audit with faithfulness and shortcut objects (python -m radiology audit --json), "
            f"got {found}"
        )
    out = {k: v for k, v in audit.items() if k != "model"}
    if out.get("data_root"):
        out["data_root"] = Path(out["data_root"]).name
    return out


def write_card(
    out: str | Path,
    phases: list[dict],
    *,
    gate_report: dict | None = None,
    notes: str = "",
    audit: dict | None = None,
) -> Path:
    """Writes ``MODEL_CARD.md`` from the bundle's ``metrics.json`` and ``card.json``, so notes can change alone.

    A new ``gate_report`` (what ``tests/test_realdata.py`` writes) and a new ``audit`` (``python -m radiology
    audit --json``) are stored in ``card.json`` first, as ``gate`` and ``trust`` (where the app reads the audit);
    without them the card keeps those it has, if any.
    """
    out = Path(out)
    try:
        result = json.loads((out / "metrics.json").read_text())
        card = json.loads((out / "card.json").read_text())
    except (OSError, ValueError) as exc:
        raise RadiologyError(f"{out} is not a bundle (metrics.json and card.json): {exc}") from exc
    if gate_report is not None:
        card["gate"] = {k: v for k, v in gate_report.items() if k != "model"}  # the model's path on the machine
    if audit is not None:
        card["trust"] = portable_audit(audit)
    if gate_report is not None or audit is not None:
        write_json_atomic(out / "card.json", card)
    text = model_card(result, phases, card, notes=notes)
    atomic_write_text(out / "MODEL_CARD.md", text)
    return out / "MODEL_CARD.md"


FROM_SCRATCH = "Trained from scratch (no ImageNet weights could be fetched here) at low resolution, on a CPU."
LIMITS = [
    "A research demo, never a diagnostic device: it has not been validated clinically.",
    "Covid images are all adult and mostly from one Spanish collection; pneumonia is mostly paediatric: "
    "the model can score by recognising age, hospital or markers instead of disease.",
    "Measured on a split of the same collections; expect lower accuracy on films from other hospitals.",
]


def _ci(interval) -> str:
    return "–" if not interval or interval[0] is None else f"{interval[0]:.3f}–{interval[1]:.3f}"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _phase_rows(phases: list[dict], data_name: str) -> tuple[list[list], list[str]]:
    rows, commands = [], []
    for i, p in enumerate(phases, 1):
        cfg, hist, test = p["config"], p["history"], p["test"] or {}
        val = [float(r["val_accuracy"]) for r in hist]
        minutes = sum(float(r.get("seconds") or 0) for r in hist) / 60
        rows.append(
            [
                i,
                f"{cfg.get('image_size')} px",
                len(hist),
                f"{cfg.get('lr'):g}",
                "yes" if cfg.get("class_weights") else "no",
                f"{max(val):.3f} (epoch {int(np.argmax(val)) + 1})",
                f"{test['accuracy']:.3f} ({_ci(test['ci']['accuracy'])})" if test else "–",
                f"{minutes:.0f} min",
                p["machine"],
            ]
        )
        commands.append(f"# phase {i}\n{phase_command(portable_config(cfg, data_name), data_name)}")
    return rows, commands


def model_card(
    result: dict,
    phases: list[dict],
    card: dict,
    *,
    notes: str,
) -> str:
    """The model card as Markdown, from the bundle's measurements (``metrics.json``, ``card.json``)."""
    counts, confounding, data_name = card["counts"], card["confounding"], card["data_name"]
    names = result["class_names"]
    ci = result["ci"]
    t = result["temperature"]
    phase_rows, commands = _phase_rows(phases, data_name)
    parts = [
        "# Model card: the RadiologyAI default model",
        "> **Research demo, not for diagnosis.** It has not been validated clinically and must not be used to make "
        "decisions about patients.",
        "## Summary",
        f"- **Task:** chest X-ray classification into {' / '.join(names)}.",
        f"- **Data:** {card['data']}.",
        f"- **Recipe:** {card['recipe']}.",
        f"- **Test split ({result['n']:,} images):** accuracy {result['accuracy']:.3f} (95% CI {_ci(ci['accuracy'])}), "
        f"macro F1 {result['macro_f1']:.3f} ({_ci(ci['macro_f1'])}), ECE {result['calibration']['ece']:.3f} "
        "after temperature scaling.",
        "### Targets",
        _table(
            ["target", "goal", "measured (95% CI)", "met"],
            [
                [
                    s["target"],
                    f"{'≤' if s['target'].startswith('ECE') else '≥'} {s['goal']}",
                    f"{s['value']:.3f}" + (f" ({_ci(s['ci'])})" if s["ci"] else ""),
                    "yes" if s["met"] else f"no, short by {abs(s['value'] - s['goal']):.3f}",
                ]
                for s in card["targets"]
            ],
        ),
        "## Data",
        f"`{data_name}` ({sum(sum(c.values()) for c in counts.values()):,} images). Images per class and source:",
        _table(
            ["class", "images", "sources"],
            [
                [label, sum(c.values()), " · ".join(f"{s} {n}" for s, n in sorted(c.items(), key=lambda x: -x[1]))]
                for label, c in counts.items()
            ],
        ),
        "Sources and licences: **raddb**, the COVID-19 Radiography Database (Chowdhury et al. 2020; Rahman et al. "
        "2021; research use with citation, upstream terms apply); **kermany**, Kermany, Zhang, Goldbaum 2018, "
        "doi:10.17632/rscbjbr9sj.2 (paediatric; CC BY 4.0); **talo**, the DarkCovidNet set (Ozturk, Talo et al. "
        "2020), its normal and pneumonia films from NIH ChestX-ray8 with labels mined from reports (NIH terms); "
        "**ieee8023**, Cohen et al.'s COVID-19 image data collection (licence per image); **fig1** and **actmed**, "
        "the Figure 1 and Actualmed sets released with COVID-Net (research use).",
        f"Split: {result['split_method']}. The test split is used only for the numbers below; every choice was "
        "made on the validation split.",
        "## Training",
        _table(
            [
                "phase",
                "size",
                "epochs",
                "lr",
                "class weights",
                "best val accuracy",
                "test accuracy (95% CI)",
                "training time",
                "machine",
            ],
            phase_rows,
        ),
        "Every phase: VGG16 architecture of the notebook (GlobalMaxPooling2D, Dense 512 ReLU, Dropout 0.5, "
        "Dense 3 softmax), Adam with amsgrad, ReduceLROnPlateau, horizontal flip and ±15° rotation, inputs rescaled "
        "by 1/255. Each phase starts from the previous phase's best checkpoint (`--weights`, shown with the run "
        "folder names of the machine that trained it). Training time counts the epochs, not the test evaluation.",
        "```bash\n" + "\n".join(commands) + "\n```",
        "Bundled with `python -m training.bundle` (this card, the float16 model and its files).",
    ]
    if notes:
        parts += ["### Choices", notes.strip()]
    parts += [
        "## Results on the test split",
        _table(
            ["class", "precision", "recall (95% CI)", "F1", "images"],
            [
                [
                    n,
                    f"{result['report'][n]['precision']:.3f}",
                    f"{result['report'][n]['recall']:.3f} ({_ci(ci['recall'][n])})",
                    f"{result['report'][n]['f1-score']:.3f}",
                    int(result["report"][n]["support"]),
                ]
                for n in names
            ],
        ),
        "Confusion matrix (rows: truth, columns: prediction):",
        _table(["", *names], [[n, *row] for n, row in zip(names, result["confusion"]["matrix"])]),
        "Accuracy per source collection (95% Wilson interval; small sources have wide intervals):",
        _table(
            ["source", "images", "accuracy (95% CI)"],
            [[s, v["n"], f"{v['accuracy']:.3f} ({_ci(v.get('ci'))})"] for s, v in result["by_source"].items()],
        ),
        "## Calibration",
        f"Probabilities {calibration.describe(t['temperature'] if t['fitted'] else None)}. On the test split:",
        _table(
            ["", "before (T = 1)", f"after (T = {t['temperature']:.3g})"],
            [
                ["expected calibration error", f"{t['ece_before']:.4f}", f"{t['ece_after']:.4f}"],
                ["negative log-likelihood", f"{t['nll_before']:.4f}", f"{t['nll_after']:.4f}"],
            ],
        ),
        (
            f"Float16 weights give the label of the float32 checkpoint (the last phase's test predictions, column "
            f"`predicted_float32` of `predictions.csv`) on {result['float16_agreement']:.2%} of the test films"
            if result.get("float16_agreement") is not None
            else "The float32 checkpoint's test predictions were not available to compare the float16 weights with"
        )
        + (
            f"; bfloat16 inference on {result['bf16_agreement']:.2%}."
            if result.get("bf16_agreement") is not None
            else "; bfloat16 inference was not measured (the machine has no bf16)."
        ),
        "## Out-of-distribution gate",
        _gate_section(result["ood"], card.get("gate")),
        "## Confounding",
        _confounding_section(confounding),
        "## Trust",
        _trust_section(card.get("trust")),
        "## Intended use and limits",
        "\n".join(f"- {line}" for line in card["limits"]),
        "## What would close the gap",
        _gap_section(card["targets"]),
    ]
    return "\n\n".join(parts) + "\n"


def _gate_section(summary: dict, report: dict | None) -> str:
    text = (
        f"On the test split the gate flags {summary['flagged']} of {summary['n']} films "
        f"({summary['flagged_share']:.1%}; by reason: "
        f"{', '.join(f'{k} {v}' for k, v in summary['by_reason'].items()) or 'none'})."
    )
    if report:
        groups = [[name, g["n"], f"{g['flagged']:.1%}"] for name, g in report["groups"].items()]
        text += (
            f" Measured with `tests/test_realdata.py`, it passes {report['test_passing']:.1%} of the test split and "
            f"flags the groups of its corpus of non-X-rays and spoilt X-rays as below (AUROC of the gate's score "
            f"{report['auroc_gate_score']:.3f}, of the feature score alone {report['auroc_feature_score']:.3f}):\n\n"
            + _table(["non-X-ray group", "images", "flagged"], groups)
        )
    return text


def _confounding_section(found: dict | None) -> str:
    if not found:
        return "Fewer than two sources with 20 or more images: source predictability not measured."
    rows = [[s, v["n"], f"{v['recall']:.2f}"] for s, v in found["sources"].items()]
    return (
        "How well a cross-validated logistic regression predicts the source collection from 32×32 thumbnails "
        f"(the Dataset page's measure): balanced accuracy {found['balanced_accuracy']:.2f} over "
        f"{len(found['sources'])} sources, chance {found['chance']:.2f}. A high recall means the collection is "
        "recognisable from its look alone, so a class that comes mostly from it can be learnt as the look:\n\n"
        + _table(["source", "images", "recall"], rows)
    )


def _trust_section(found: dict | None) -> str:
    """The trust audit (``radiology.audit``) as Markdown: verdict, faithfulness, shortcuts, cost."""
    from radiology import audit

    if not found:
        return (
            "Not audited. `python -m radiology audit --model models/default --data DIR --json > audit.json`, then "
            "`python -m training.bundle ... --card-only --audit audit.json`, adds the audit here."
        )
    f, s = found["faithfulness"], found["shortcut"]
    cost, box = f["cost"], s["box"]
    parts = [
        f"Measured with `python -m radiology audit` on the {audit.described(found)}.",
        "\n".join(f"- {line}" for line in audit.verdict(found)),
        "### Faithfulness of the explanations",
        f"Deletion and insertion (Petsiuk et al., RISE, 2018): the pixels of the model input are replaced by a "
        f"blurred copy (σ {f['blur_sigma_px']:g} px), most salient first, in {f['steps']} steps, tracking "
        f"{f['tracked']}. The deletion AUC is lower, the insertion AUC higher, for a map that found what the "
        "prediction rests on. A method is no better than random when its insertion − deletion, paired image by "
        "image, is not above the random map's by a bootstrap 95% interval. The random map is noise on the CAM's "
        "own grid, the centre map a prior that peaks mid-film.",
        _markdown_table(audit.faithfulness_rows(f)),
        f"Cost on the development machine: {cost['map_seconds']:.0f} s for the maps and "
        f"{cost['curve_seconds']:.0f} s for the curves ({cost['model_inputs']:,} model inputs in "
        f"{cost['model_calls']:,} batched calls, {cost['calls_per_image']:.1f} per image); the whole audit "
        f"{found.get('seconds', 0) / 60:.0f} min.",
        "### Shortcuts",
        f"The thorax box covers rows {box['top']:.0%}–{box['bottom']:.0%} and columns {box['left']:.0%}–"
        f"{box['right']:.0%} of the film ({box['area']:.0%} of it): the lung fields of a frontal film. Borders "
        f"only: the box replaced by {box['fill']}; thorax only: everything outside it. Chance {s['chance']:.0%}; "
        f"always answering the most frequent class {s['majority']:.0%}.",
        _markdown_table(audit.shortcut_rows(s)),
        "Where the Grad-CAM of the predicted class falls, for the images of each class:",
        _markdown_table(audit.cam_rows(s)),
    ]
    source = s.get("source_from_features")
    if source:
        parts += [
            "The source collection predicted from the model's own pooled features (cross-validated logistic "
            "regression, folds by patient group; recall per source in brackets):",
            _markdown_table(audit.source_rows(source)),
        ]
    return "\n\n".join(parts)


def _markdown_table(rows: list[dict]) -> str:
    return _table(list(rows[0]), [list(r.values()) for r in rows]) if rows else ""


def _gap_section(targets: list[dict]) -> str:
    missed = [s["target"] for s in targets if not s["met"]]
    if not missed:
        return "Every target is met."
    return (
        f"Missed: {', '.join(missed)}. The model is limited by what two CPU cores train in a few hours: from scratch "
        "(no ImageNet features), at 128 px, for few epochs, with validation accuracy still rising when training "
        "stopped. What would close it: ImageNet initialisation (the notebook's recipe; a user with internet gets it "
        "with `--weights imagenet`), 224 px inputs and more epochs on a GPU (the GPU issue), and adult pneumonia "
        "films so that the classes differ by disease rather than by age."
    )


def main(argv=None) -> int:
    """Runs the command line; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m training.bundle", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="the run folder (or .keras file) to ship")
    p.add_argument("--data", required=True, help="the dataset it was trained on")
    p.add_argument("--phase", action="append", required=True, help="a phase's run folder, in training order")
    p.add_argument("--machine", action="append", required=True, help="the machine of each phase, in the same order")
    p.add_argument("--out", default="models/default")
    p.add_argument("--gate-report", help="the JSON that tests/test_realdata.py writes for the gate")
    p.add_argument("--notes", help="a Markdown file with the recipe's choices and why")
    p.add_argument("--cache-dir", help="decode cache")
    p.add_argument("--card-only", action="store_true", help="rewrite MODEL_CARD.md of an existing bundle only")
    p.add_argument("--audit", help="a trust audit of the model (python -m radiology audit --json) for the card")
    args = p.parse_args(argv)
    if len(args.machine) != len(args.phase):
        p.error(f"give one --machine per --phase: {len(args.phase)} phases, {len(args.machine)} machines")
    try:
        phases = [read_phase(f, m) for f, m in zip(args.phase, args.machine)]
        gate = json.loads(Path(args.gate_report).read_text()) if args.gate_report else None
        notes = Path(args.notes).read_text() if args.notes else ""
        audit = json.loads(Path(args.audit).read_text()) if args.audit else None
        if args.card_only:
            print(f"wrote {write_card(args.out, phases, gate_report=gate, notes=notes, audit=audit)}")
            return 0
        result = bundle(
            args.model,
            args.data,
            phases,
            args.out,
            gate_report=gate,
            notes=notes,
            cache_dir=args.cache_dir,
            audit=audit,
        )
    except (RadiologyError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"bundled in {args.out}: test accuracy {result['accuracy']:.4f} on {result['n']} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
