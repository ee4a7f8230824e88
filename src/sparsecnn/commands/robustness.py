"""``sparsecnn robustness``: corruption and attack curves of a CNN and of the same CNN with its
forward pass swapped for k-step sparse inference (docs/theory.md A.8), plus anomaly detection.

The model is a ``sparsecnn train`` run directory (``--run``: ``config.json`` +
``model.safetensors``) or, by default, a small CNN (conv 3x3 8 channels, conv 3x3 stride 2 16
channels, linear head) trained here on ``--data`` (default scikit-learn's digits).  ``--data``
also replaces a run's own dataset for the evaluation (same image shape and classes).
Outputs in ``--out``: ``robustness.json`` (every number), ``corruptions.png``,
``attacks.png`` and, with ``--anomaly``, ``anomaly.json`` and ``anomaly_roc.png``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import click
import torch

from ..io import OutputExistsError
from ._data import data_option, load_data_option
from ._limits import require_replaceable
from ._options import comma_separated

__all__ = ["command"]


@click.command("robustness")
@click.option("--run", "run_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="A `sparsecnn train` output directory (config.json + "
              "model.safetensors); default: train a small CNN on --data here.")
@data_option(None, " Default: the --run's dataset, else digits.")
@click.option("--n-train", type=click.IntRange(min=1), default=None,
              help="Training images used (a seeded stratified subset; default: all).")
@click.option("--n-iter", "n_iter_list", default="0,2,5,10", show_default=True,
              help="Sparse-inference steps k for the swapped forward passes (from_cnn).")
@click.option("--method", type=click.Choice(["ista", "fista", "lca"]), default="ista",
              show_default=True, help="Sparse-inference algorithm of the swapped layers.")
@click.option("--refit-head/--no-refit-head", default=True, show_default=True,
              help="Refit the logistic-regression head on the k-step codes.")
@click.option("--n-images", type=click.IntRange(min=1), default=300, show_default=True,
              help="Test images evaluated (the first of the test set).")
@click.option("--pgd-steps", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--epsilons-linf", default="0,0.05,0.1,0.2", show_default=True,
              help="FGSM / PGD L-inf radii (pixels in [0, 1]).")
@click.option("--epsilons-l2", default="0,0.5,1,2", show_default=True, help="PGD L2 radii.")
@click.option("--n-minimal", type=click.IntRange(min=0), default=50, show_default=True,
              help="Images for the median minimal L2 perturbation (0: skip).")
@click.option("--anomaly/--no-anomaly", default=True, show_default=True,
              help="AUROC / FPR@95TPR of sparse-coding and max-softmax anomaly scores against "
              "offline out-of-distribution sets (on by default; --no-anomaly skips it).")
@click.option("--epochs", type=click.IntRange(min=1), default=15, show_default=True,
              help="Epochs of the CNN trained when --run is not given.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              default=Path("runs/robustness"), show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing --out directory.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def command(run_dir: Path | None, data_name: str | None, n_train: int | None, n_iter_list: str,
            method: str, refit_head: bool,
            n_images: int, pgd_steps: int, epsilons_linf: str, epsilons_l2: str,
            n_minimal: int, anomaly: bool, epochs: int, out_dir: Path, seed: int, device: str,
            overwrite: bool, no_progress: bool) -> None:
    """Evaluate a CNN and its k-step sparse-inference versions under Gaussian noise,
    salt-and-pepper, blur, contrast and occlusion (severities 0..5), FGSM and PGD (L-inf, L2)
    and the minimal L2 perturbation; write robustness.json and PNG curves to --out."""
    steps = tuple(dict.fromkeys(comma_separated(n_iter_list, "--n-iter", example="0,2,5,10",
                                                minimum=0)))
    radii_linf = comma_separated(epsilons_linf, "--epsilons-linf", integer=False,
                                 example="0,0.05,0.1", minimum=0)
    radii_l2 = comma_separated(epsilons_l2, "--epsilons-l2", integer=False,
                               example="0,0.05,0.1", minimum=0)
    require_replaceable(out_dir, overwrite)
    try:
        torch_device = torch.device(device)
        torch.empty(0, device=torch_device)
    except (RuntimeError, TypeError, AssertionError) as error:
        raise click.BadParameter(f"cannot use device {device!r}: {error}",
                                 param_hint="--device") from None
    from tqdm.auto import tqdm

    from .. import io
    from ..anomaly import anomaly_scores, detection_table, out_of_distribution_sets
    from ..nn import UnmappedLayerWarning, from_cnn
    from ..robustness import evaluate_robustness
    from ..robustness.figures import plot_attack_curves, plot_corruption_curves, plot_roc_curves
    from ..training import ConvClassifier, load_run, small_cnn, train_classifier
    from ..training import refit_head as refit

    if run_dir is not None:
        try:
            training_run = load_run(run_dir, seed=seed)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--run") from None
        model, data, dataset = training_run.model, training_run.data, training_run.config.dataset
        if data_name is not None:
            run_shape, run_classes = data.image_shape, data.n_classes
            data, dataset = load_data_option(data_name, seed=seed, n_train=n_train), data_name
            if (data.image_shape, data.n_classes) != (run_shape, run_classes):
                raise click.BadParameter(
                    f"the run's model takes images {list(run_shape)} with {run_classes} "
                    f"classes; {data_name!r} has {list(data.image_shape)} with "
                    f"{data.n_classes}", param_hint="--data")
    else:
        dataset = data_name or "digits"
        data = load_data_option(dataset, seed=seed, n_train=n_train)
        if dataset == "digits":
            network = small_cnn(data.n_classes, seed)
        else:
            # small_cnn's layers, sized for this dataset's images
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                channels, height, width = data.image_shape
                network = ConvClassifier(channels, (height, width), (8, 16), (1, 2),
                                         data.n_classes)
        model = train_classifier(network, data.train_images, data.train_labels,
                                 epochs=epochs, seed=seed)
    model = model.to(torch_device)
    images = data.test_images[:n_images].to(torch_device)
    labels = data.test_labels[:n_images].to(torch_device)
    train_images = data.train_images.to(torch_device)
    train_labels = data.train_labels.to(torch_device)
    results: dict[str, Any] = {"dataset": dataset, "seed": seed, "method": method,
                               "refit_head": refit_head, "n_images": int(images.shape[0]),
                               "run": None if run_dir is None else str(run_dir), "models": {}}
    iterator = tqdm(steps, desc="robustness", unit="model", disable=no_progress)
    for k in iterator:
        iterator.set_postfix(n_iter=k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnmappedLayerWarning)
            try:
                swapped = from_cnn(model, n_iter=k, method=method).eval()
            except ValueError as error:
                raise click.ClickException(f"cannot swap the forward pass: {error}") from None
        if k > 0 and refit_head:
            if not isinstance(getattr(swapped, "head", None), torch.nn.Linear) or \
                    not hasattr(swapped, "features"):
                raise click.ClickException("--refit-head needs a model with `features` and a "
                                           "linear `head`; pass --no-refit-head")
            refit(swapped, train_images, train_labels)
        results["models"][f"k{k}"] = evaluate_robustness(
            swapped, images, labels, epsilons_linf=radii_linf, epsilons_l2=radii_l2,
            pgd_steps=pgd_steps, minimal_subset=n_minimal or None, seed=seed)
    corruption = {name: {c: {"mean": v, "sd": [0.0] * len(v)}
                         for c, v in r["corruptions"]["accuracy"].items()}
                  for name, r in results["models"].items()}
    attack = {name: {a: {"mean": v["accuracy"], "sd": [0.0] * len(v["accuracy"])}
                     for a, v in r["attacks"].items()} for name, r in results["models"].items()}
    anomaly_results = None
    if anomaly:
        in_scores = anomaly_scores(model, images)
        sets = out_of_distribution_sets(images.cpu(), n=int(images.shape[0]), seed=seed)
        out_scores = {name: anomaly_scores(model, ood.to(torch_device))
                      for name, ood in sets.items()}
        anomaly_results = {"table": detection_table(in_scores, out_scores),
                           "score_names": sorted(in_scores)}
    try:
        with io.atomic_directory(out_dir, overwrite=overwrite) as staging:
            io.write_json(staging / "robustness.json", results)
            from ..report.study import Figure

            corruption_figure = plot_corruption_curves(corruption)
            attack_figure = plot_attack_curves(attack, radii_linf, radii_l2)
            for name, figure in (("corruptions", corruption_figure),
                                 ("attacks", attack_figure)):
                io.write_bytes(staging / f"{name}.png",
                               Figure.from_matplotlib(name, "", figure).png)
            if anomaly_results is not None:
                io.write_json(staging / "anomaly.json", anomaly_results)
                roc = plot_roc_curves(in_scores, out_scores, anomaly_results["score_names"])
                io.write_bytes(staging / "anomaly_roc.png",
                               Figure.from_matplotlib("anomaly_roc", "", roc).png)
    except OutputExistsError as error:
        raise click.ClickException(str(error)) from None
    summary = ", ".join(f"k={k}: clean {r['clean_accuracy']:.3f}, PGD-Linf@"
                        f"{radii_linf[-1]:g} {r['attacks']['pgd_linf']['accuracy'][-1]:.3f}"
                        for k, r in zip(steps, results["models"].values(), strict=True))
    click.echo(f"{summary}; files in {out_dir}")
