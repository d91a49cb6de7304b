"""The study: its data, the protocol's steps and what they produce.

Modules: `data` (StudyData and the patient holdout), `simulation` (a simulated multicentre
study, simulated readers), `exports` (labelled exports -> StudyData; `RetrainData`),
`fitting` (one fit: inner split, train, temperature), `protocol` (the steps and the plain loop
`run_study`), `records` (the steps' small records), `staging` (final fits' weights in the
registry until `conclude`), `registration` (best arch, readers, register, gate), `run_config`,
`reference` (training reference for drift), `table` (the study table), `summary` (the retrain
flow's artifacts).
"""

from scintiflow.ml.study.data import (
    INTERNAL_FRACTION,
    STUDY_SHAPE,
    StudyData,
    StudyDataError,
    StudyImage,
    patient_holdout,
    study_arrays,
)
from scintiflow.ml.study.exports import (
    LabelRow,
    RetrainData,
    StoreOpener,
    labels_fingerprint,
    load_exports,
    load_study_data,
    read_labels_csv,
    read_reader_reads,
    read_url,
)
from scintiflow.ml.study.protocol import conclude, final_fit, fit_fold, run_study
from scintiflow.ml.study.records import FinalFit, FoldFit, RetrainOutcome, StudyOutcome
from scintiflow.ml.study.reference import training_reference
from scintiflow.ml.study.run_config import train_record
from scintiflow.ml.study.simulation import simulate_study_data, simulated_reader_reads
from scintiflow.ml.study.staging import StagingArea
from scintiflow.ml.study.table import study_table

__all__ = [
    "INTERNAL_FRACTION",
    "STUDY_SHAPE",
    "FinalFit",
    "FoldFit",
    "LabelRow",
    "RetrainData",
    "RetrainOutcome",
    "StagingArea",
    "StoreOpener",
    "StudyData",
    "StudyDataError",
    "StudyImage",
    "StudyOutcome",
    "conclude",
    "final_fit",
    "fit_fold",
    "labels_fingerprint",
    "load_exports",
    "load_study_data",
    "patient_holdout",
    "read_labels_csv",
    "read_reader_reads",
    "read_url",
    "run_study",
    "simulate_study_data",
    "simulated_reader_reads",
    "study_arrays",
    "study_table",
    "train_record",
    "training_reference",
]
