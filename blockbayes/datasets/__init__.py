"""Datasets for blockbayes: teacher–student data from the noisy MLP, the UCI regression benchmark
with Gal's splits, scikit-learn's bundled sets and MNIST-1D.

Every loader returns a :class:`Dataset` (train/test arrays plus the standardisation statistics
needed to report metrics in original units). Arrays are NumPy by default; ``device="cuda"`` puts
them on a GPU with CuPy. Nothing here downloads unless asked to (``uci(..., download=True)`` /
:func:`download_uci`).

=======================  ===============================================================
:func:`teacher_student`  data from a teacher drawn from an :class:`~blockbayes.MLP` prior
:func:`uci`              UCI regression benchmark, Gal/PBP splits (EVALUATION.md §1.1)
:func:`sklearn_dataset`  digits, breast_cancer, iris, wine, diabetes (bundled, offline)
:func:`mnist1d`          MNIST-1D via the optional ``mnist1d`` package (procedural, offline)
:func:`nested_order`     nested class-stratified subset orders for data-efficiency curves
:func:`standardize`      standardise train/test with the training statistics
=======================  ===============================================================
"""
from ._base import DataFormatError, Dataset, nested_order, standardize
from ._bundled import SKLEARN_DATASETS, mnist1d, sklearn_dataset
from ._synthetic import TEACHER_BLOCK, Teacher, teacher_student
from ._uci import (GAL_BASE_URL, UCI_ENV_VAR, UCIInfo, download_uci, gal_split, uci, uci_info,
                   uci_names)

__all__ = [
    "Dataset", "DataFormatError", "Teacher", "UCIInfo",
    "teacher_student", "TEACHER_BLOCK",
    "uci", "uci_names", "uci_info", "gal_split", "download_uci", "UCI_ENV_VAR", "GAL_BASE_URL",
    "sklearn_dataset", "SKLEARN_DATASETS", "mnist1d", "nested_order",
    "standardize",
]
