"""GLUE dev-set metrics as a local `evaluate` module.

The Hub's `glue` metric cannot be fetched offline; this one is loaded from disk with
`evaluate.load(<this directory>, config_name=<task>)` and computes the same numbers
(scikit-learn / scipy underneath). The config name is the task: cola, sst2, mrpc,
qqp, stsb, mnli, qnli, rte. MNLI is scored one eval split at a time.
"""

import datasets
import evaluate
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

_DESCRIPTION = "GLUE dev-set metrics (offline copy of the Hub's `glue` metric)."
_CITATION = """@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  booktitle={International Conference on Learning Representations},
  year={2019}
}
"""
_INPUTS = """
Args:
    predictions: class ids (float scores for stsb).
    references: gold class ids (float scores for stsb).
Returns:
    cola: matthews_correlation; sst2, mnli, qnli, rte: accuracy; mrpc, qqp: accuracy, f1;
    stsb: pearson, spearmanr.
"""


def _accuracy(predictions, references):
    return {"accuracy": float(accuracy_score(references, predictions))}


def _accuracy_and_f1(predictions, references):
    return {**_accuracy(predictions, references), "f1": float(f1_score(references, predictions))}


def _matthews(predictions, references):
    return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}


def _correlations(predictions, references):
    return {
        "pearson": float(pearsonr(predictions, references)[0]),
        "spearmanr": float(spearmanr(predictions, references)[0]),
    }


_COMPUTE_BY_TASK = {
    "cola": _matthews,
    "sst2": _accuracy,
    "mrpc": _accuracy_and_f1,
    "qqp": _accuracy_and_f1,
    "stsb": _correlations,
    "mnli": _accuracy,
    "qnli": _accuracy,
    "rte": _accuracy,
}


class GlueMetric(evaluate.Metric):
    """One GLUE task's dev metrics; the task is the config name."""

    def _info(self):
        if self.config_name not in _COMPUTE_BY_TASK:
            raise ValueError(f"config_name: unknown {self.config_name!r}; choose one of {', '.join(sorted(_COMPUTE_BY_TASK))}")
        dtype = "float32" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
        )

    def _compute(self, predictions, references):
        return _COMPUTE_BY_TASK[self.config_name](predictions, references)
