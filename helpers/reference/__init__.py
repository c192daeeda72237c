"""The paper's published numbers (Dey et al., TMLR 2025), to print and draw beside reproduced ones.

:mod:`.paper` holds the numbers the paper prints (AlexNet's accuracy, Fig. 5's counts, Fig. 7's accuracies);
:mod:`.figures` loads the exact published values of Figs. 5, 6 and 7, shipped beside it as CSVs (README.md says
where they come from and what to know before using them); :mod:`.compare` sets reproduced tables beside them and
tabulates the differences.
"""
from __future__ import annotations

from .compare import (ablation_vs_published, counts_beside_paper, curve_frame, explained_variance_vs_published,
                      summary, user_study_beside_paper, user_study_vs_published)
from .figures import ablation, explained_variance, user_study
from .paper import (ALEXNET_TOP1, EXPLAINED_VARIANCE_COUNTS, LAYER_DIMS, MODEL, USER_STUDY_ACCURACY,
                    USER_STUDY_CORRECT, USER_STUDY_PARTICIPANTS, USER_STUDY_SEM, USER_STUDY_TRIALS, applies, vectors)

__all__ = ["ALEXNET_TOP1", "EXPLAINED_VARIANCE_COUNTS", "LAYER_DIMS", "MODEL", "USER_STUDY_ACCURACY",
           "USER_STUDY_CORRECT", "USER_STUDY_PARTICIPANTS", "USER_STUDY_SEM", "USER_STUDY_TRIALS", "ablation",
           "ablation_vs_published", "applies", "counts_beside_paper", "curve_frame", "explained_variance",
           "explained_variance_vs_published", "summary", "user_study", "user_study_beside_paper",
           "user_study_vs_published", "vectors"]
