"""The Space's "Model" tab: how the classifier behaves on validation and shift_dev.

Everything shown comes from ``checkpoints/model_report.json`` (built by
``python -m xray_xai.artifacts.model_report``, read by :mod:`xray_xai.model_report`) and its
error sprite; nothing is scored at run time. A report built for other weights than the running
classifier's is refused, not shown.
Call :func:`build_model_tab` inside ``with gr.Tab("Model") as tab:``. Its figures, tables and
gallery are filled in when the tab is first opened, drawn once per process (:func:`prerender`
draws them ahead, e.g. once the app's models have loaded): the page is served without drawing
them, and without matplotlib, scipy and scikit-learn, which they need.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from .. import CLASSES
from ..calibration import OPERATING_POINTS
from ..model_report import DEFAULT_REPORT, ModelReport, report_problem
from ..report import percent

# matplotlib, scikit-learn and ..metrics (scipy, scikit-learn) are imported in the functions that
# draw and count: the page is served before the tab is first opened (see build_model_tab).
if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .plots import Mark, Scores

SPLIT_HELP = (
    "**validation**: the patient-level split of train/ that the temperature and thresholds were fitted on. "
    "**shift_dev**: half of the official test split, whose films look different (a window onto distribution "
    "shift; never fitted on)."
)
COLOURS = {"validation": "C0", "shift_dev": "C3"}
DEFAULT_PREVALENCE_PERCENT = 10.0
PREVALENCE_HELP = (
    "Sensitivity and specificity are properties of the model at this threshold. PPV (how often a PNEUMONIA "
    "call is right) and NPV (how often a NORMAL call is right) also depend on how common pneumonia is among "
    "the films read: the rarer it is, the more of the positive calls are false alarms (PPV falls) and the "
    "more of the negative calls are right (NPV rises). They are recomputed here with Bayes' rule for "
    "the prevalence you enter, from each split's sensitivity and specificity."
)


def _percent(value: float | None) -> str:
    """The app's one percentage format (:func:`xray_xai.report.percent`); "n/a" when undefined."""
    return "n/a" if value is None else percent(value)


def _scores(report: ModelReport, marks: tuple[Mark, ...] = ()) -> list[Scores]:
    from .plots import Scores

    return [Scores(split.labels, split.probs, name, COLOURS[name], marks) for name, split in report.splits.items()]


def roc_figure(report: ModelReport) -> Figure:
    """ROC curves of both splits, with AUROC and the balanced operating point marked."""
    from matplotlib.figure import Figure

    from .plots import Mark, roc_panel

    fig = Figure(figsize=(5, 4.6), layout="constrained")
    roc_panel(fig.subplots(), _scores(report, (Mark(report.threshold("balanced")),)), "ROC (dots: balanced point)")
    return fig


def pr_figure(report: ModelReport) -> Figure:
    """Precision-recall curves of both splits, with AUPRC and each split's prevalence."""
    from matplotlib.figure import Figure

    from .plots import pr_panel

    fig = Figure(figsize=(5, 4.6), layout="constrained")
    pr_panel(fig.subplots(), _scores(report), "Precision-recall")
    return fig


def reliability_figure(report: ModelReport, n_bins: int = 15) -> Figure:
    """Reliability diagrams side by side: observed pneumonia rate against predicted probability
    (the bins of the model card's ECE; dot area grows with the films in a bin)."""
    from matplotlib.figure import Figure

    from .plots import reliability_panel

    fig = Figure(figsize=(9, 4.2), layout="constrained")
    axes = fig.subplots(1, len(report.splits), sharey=True)
    for ax, (name, split) in zip(axes, report.splits.items(), strict=True):
        reliability_panel(ax, split.probs, split.labels, name, bar_colour=COLOURS[name], dot_colour="k", n_bins=n_bins)
        ax.label_outer()
    return fig


def confusion_figure(report: ModelReport) -> Figure:
    """Confusion matrices: one row per split, one column per operating point."""
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    from ..metrics import confusion_at

    points = [p for p in OPERATING_POINTS if p in report.operating_points]
    fig = Figure(figsize=(3.2 * len(points), 6.2), layout="constrained")
    axes = fig.subplots(len(report.splits), len(points), squeeze=False)
    for row, (name, split) in zip(axes, report.splits.items(), strict=True):
        for ax, point in zip(row, points, strict=True):
            rates = confusion_at(split.labels, split.probs, report.threshold(point))
            ConfusionMatrixDisplay(np.array(rates.confusion), display_labels=CLASSES).plot(
                ax=ax, colorbar=False, cmap="Blues"
            )
            ax.set_title(
                f"{name} · {point} (p ≥ {rates.threshold:.3f})\n"
                f"sens {_percent(rates.sensitivity)} · spec {_percent(rates.specificity)}",
                fontsize=9,
            )
    return fig


def bands_table(report: ModelReport) -> pd.DataFrame:
    """Films and accuracy per confidence band at the balanced point, for each split."""
    from ..metrics import band_rows, called_pneumonia

    columns = {}
    for name, split in report.splits.items():
        correct = called_pneumonia(split.probs, report.threshold("balanced")) == split.labels
        rows = band_rows(correct, split.bands)
        columns["Band"] = [r.band for r in rows]
        columns[f"{name} n"] = [r.n for r in rows]
        columns[f"{name} accuracy"] = [_percent(r.accuracy) for r in rows]
    return pd.DataFrame(columns)


def valid_prevalence(prevalence_percent: float | None) -> bool:
    """Whether PPV and NPV can be computed: a prevalence strictly between 0% and 100%."""
    return prevalence_percent is not None and 0 < prevalence_percent < 100


def explore(report: ModelReport, threshold: float, prevalence_percent: float | None) -> tuple[pd.DataFrame, str]:
    """Sensitivity, specificity, and PPV/NPV at the user's prevalence, per split, at ``threshold``.

    A prevalence of 0% or 100% (or none) leaves PPV and NPV undefined: they show "n/a" and the
    note says which values are accepted, instead of an error."""
    from ..metrics import confusion_at, predictive_values

    valid = valid_prevalence(prevalence_percent)
    at = f"at {prevalence_percent:g}%" if valid else "at your prevalence"
    rows = []
    for name, split in report.splits.items():
        rates = confusion_at(split.labels, split.probs, threshold)
        ppv, npv = (
            predictive_values(rates.sensitivity, rates.specificity, prevalence_percent / 100) if valid else (None, None)
        )
        rows.append(
            {
                "Split": name,
                "Sensitivity": _percent(rates.sensitivity),
                "Specificity": _percent(rates.specificity),
                f"PPV {at}": _percent(ppv),
                f"NPV {at}": _percent(npv),
                "Split's own prevalence": _percent(rates.prevalence),
            }
        )
    if not valid:
        entered = "no prevalence" if prevalence_percent is None else f"a prevalence of {prevalence_percent:g}%"
        note = (
            f"**PPV and NPV need a prevalence between 0.1% and 99.9%** ({entered} was entered: with no films of "
            f"one class there is nothing to call right or wrong). Threshold p ≥ {threshold:.3f}. {PREVALENCE_HELP}"
        )
        return pd.DataFrame(rows), note
    note = f"Threshold p ≥ {threshold:.3f}; prevalence in your setting {prevalence_percent:g}%. {PREVALENCE_HELP}"
    return pd.DataFrame(rows), note


def wrong_confidence(film: dict) -> float:
    """The calibrated probability the model gave its wrong answer: P(pneumonia) for a false
    positive, P(normal) for a false negative."""
    return 1.0 - film["probability"] if film["label"] else film["probability"]


def gallery_items(report: ModelReport) -> list[tuple[Image.Image, str]]:
    """The error sprite cut into (film | Grad-CAM) pairs, each captioned with what went wrong,
    the most confidently wrong first (whatever order the sprite's rows are in)."""
    threshold = report.threshold("balanced")
    rows = sorted(enumerate(report.errors), key=lambda item: -wrong_confidence(item[1]))
    with Image.open(report.sprite) as sheet:
        sheet.load()
        items = []
        for row, film in rows:
            kind, wrong = ("False negative", "NORMAL") if film["label"] else ("False positive", "PNEUMONIA")
            tile = sheet.crop((0, row * report.tile, 2 * report.tile, (row + 1) * report.tile))
            caption = (
                f"{kind} · called {wrong} with {percent(wrong_confidence(film))} · {film['file']} · "
                f"P(pneumonia) {film['probability']:.3f} (threshold {threshold:.3f}) · band {film['band']}"
            )
            items.append((tile, caption))
    return items


PLOTS = {  # elem_id suffix -> (label, figure)
    "roc": ("ROC", roc_figure),
    "pr": ("Precision-recall", pr_figure),
    "reliability": ("Reliability (calibration)", reliability_figure),
    "confusion": ("Confusion matrices at the three operating points", confusion_figure),
}
_DRAWN: dict[Path, tuple[Any, ...]] = {}  # report path -> (plot values..., bands table, gallery items)
_DRAWING = threading.Lock()


def drawn(report_path: str | Path) -> tuple[Any, ...]:
    """The tab's figures (as ``gr.Plot`` sends them, in the order of ``PLOTS``), bands table and
    gallery items for the report at ``report_path``: drawn on first use, once per process
    (concurrent callers wait for it)."""
    key = Path(report_path).resolve()
    with _DRAWING:
        if key not in _DRAWN:
            report = ModelReport.load(key)
            encoder = gr.Plot(render=False)  # what each gr.Plot of the tab sends (one format for all)
            plots = tuple(encoder.postprocess(figure(report)) for _, figure in PLOTS.values())
            _DRAWN[key] = (*plots, bands_table(report), gallery_items(report))
        return _DRAWN[key]


def prerender(classifier_sha256: str, report_path: str | Path = DEFAULT_REPORT) -> None:
    """Draw the tab ahead of its first opening, when it shows the report (built for these weights)."""
    if report_problem(report_path, classifier_sha256) is None:
        drawn(report_path)


def build_model_tab(tab: gr.Tab, classifier_sha256: str, report_path: str | Path = DEFAULT_REPORT) -> None:
    """Create the Model tab's components in the current Blocks context, ``tab``, which fills them
    in when a session first opens it (from :func:`drawn`)."""
    problem = report_problem(report_path, classifier_sha256)
    if problem is not None:
        gr.Markdown(problem, elem_id="model-report-problem")
        return
    report = ModelReport.load(report_path)
    counts = ", ".join(f"{name} {len(split.labels)} films" for name, split in report.splits.items())
    gr.Markdown(f"## How the model behaves\nPrecomputed for these weights ({counts}). {SPLIT_HELP}")
    with gr.Row():
        roc = gr.Plot(label=PLOTS["roc"][0], elem_id="model-roc")
        pr = gr.Plot(label=PLOTS["pr"][0], elem_id="model-pr")
    reliability = gr.Plot(label=PLOTS["reliability"][0], elem_id="model-reliability")
    bands = gr.Dataframe(
        label="Accuracy per confidence band (balanced point)",
        interactive=False,
        elem_id="model-bands",
    )
    confusion = gr.Plot(label=PLOTS["confusion"][0], elem_id="model-confusion")
    gr.Markdown("### Threshold explorer")
    with gr.Row():
        threshold = gr.Slider(
            0.0, 1.0, value=round(report.threshold("balanced"), 3), step=0.001, label="Threshold on P(pneumonia)"
        )
        prevalence = gr.Number(  # no minimum: explore() explains an impossible value instead of an error
            DEFAULT_PREVALENCE_PERCENT,
            step=0.1,
            label="Prevalence of pneumonia in your setting (%)",
        )
    explorer_table = gr.Dataframe(interactive=False, elem_id="model-explorer")
    explorer_note = gr.Markdown()
    gr.on(
        [threshold.change, prevalence.change],
        lambda t, p: explore(report, t, p),
        [threshold, prevalence],
        [explorer_table, explorer_note],
        api_visibility="private",
        show_progress="hidden",
        trigger_mode="always_last",
    )
    gr.Markdown(
        "### Error gallery\nValidation films called wrong at the balanced point, most confidently wrong first: "
        "the film, "
        "then Grad-CAM of the evidence for the (wrong) predicted class. Films from Kermany, Zhang and Goldbaum (2018), "
        "doi:10.17632/rscbjbr9sj.2, CC BY 4.0."
    )
    gallery = gr.Gallery(
        columns=4,
        height="auto",
        allow_preview=True,
        object_fit="contain",
        format="jpeg",
        elem_id="model-errors",
        label=f"{len(report.errors)} validation errors",
    )
    outputs = [roc, pr, reliability, confusion, bands, gallery, explorer_table, explorer_note]

    def fill(note: str, t: float, p: float | None) -> tuple:
        if note:  # filled in when this session opened the tab before: keep it (the explorer follows its inputs)
            return (gr.skip(),) * len(outputs)
        return (*drawn(report_path), *explore(report, t, p))

    # The explorer's note tells whether the tab is filled in (a gr.State would keep a heartbeat
    # connection open on pages without one).
    tab.select(fill, [explorer_note, threshold, prevalence], outputs, api_visibility="private")
