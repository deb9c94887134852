"""The paper's published figures (Lian et al., arXiv 2312.04293), for the report to compare with.

Figures are percentages, keyed by dataset and then by the run's variant: "" for the main
setting, else the input kind (text, video), "grey", or "2f" for two frames per video.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    values: tuple[float, ...]  # accuracy; or WAR, UAR; or the non-zero weighted F1
    method: str = "GPT-4V"


GPT4V: dict[str, dict[str, Figure]] = {
    "ckplus": {"": Figure((69.72,))},
    "sfew2": {"": Figure((57.24,))},
    "rafdb": {"": Figure((75.81,)), "grey": Figure((74.28,))},
    "ferplus": {"": Figure((64.25,))},
    "affectnet": {"": Figure((42.77,))},
    "abstract": {"": Figure((71.81,))},
    "artphoto": {"": Figure((80.40,))},
    "twitter1": {"": Figure((97.81,)), "4agree": Figure((94.63,)), "3agree": Figure((90.71,))},
    "twitter2": {"": Figure((87.95,))},
    "casme": {"": Figure((36.93,))},
    "casme2": {"": Figure((14.64,))},
    "samm": {"": Figure((17.04,))},
    "dfew": {"": Figure((43.80, 36.96))},
    "ferv39k": {"": Figure((34.29, 24.92))},
    "ravdess": {"": Figure((34.31, 36.98)), "2f": Figure((22.29, 25.33))},
    "enterface": {"": Figure((33.28, 33.11)), "2f": Figure((23.78, 24.06))},
    "cmumosi": {"": Figure((80.43,)), "text": Figure((82.32,)), "video": Figure((51.17,))},
    "sims": {"": Figure((81.24,)), "text": Figure((70.07,)), "video": Figure((76.13,))},
    "mer2023": {"": Figure((63.50,)), "text": Figure((34.06,)), "video": Figure((45.50,))},
}

SUPERVISED: dict[str, Figure] = {
    **{name: Figure((value,), "IPD-FER") for name, value in (
        ("ckplus", 98.65), ("sfew2", 58.43), ("rafdb", 88.89), ("ferplus", 88.42),
        ("affectnet", 62.23))},
    **{name: Figure((value,), "AR (Concat)") for name, value in (
        ("abstract", 76.03), ("artphoto", 74.80), ("twitter1", 88.65), ("twitter2", 80.48))},
    **{name: Figure((value,), "TSCNN") for name, value in (
        ("casme", 73.88), ("casme2", 80.97), ("samm", 71.76))},
    "dfew": Figure((65.78, 55.39), "DPCNet"),
    "ferv39k": Figure((52.07, 43.12), "MAE-DFER"),
    "ravdess": Figure((75.56, 75.91), "MAE-DFER"),
    "enterface": Figure((61.64, 61.67), "MAE-DFER"),
    **{name: Figure((value,), "MulT") for name, value in (
        ("cmumosi", 81.41), ("sims", 91.07), ("mer2023", 82.94))},
}
