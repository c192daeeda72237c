"""The user study (§4.2, Fig. 7): ``stimuli`` (trials, the response log), ``app`` (the participants' app,
served by Voila), ``observers`` (the machine observer), ``analysis`` (accuracies and paired tests)."""
from .stimuli import (FIELDS, GAP, ResponseLog, check_code, column_boxes, load_stimuli, make_stimuli, resume_point,
                      shuffle_columns, stimuli_key, trial_list)

__all__ = ["FIELDS", "GAP", "ResponseLog", "check_code", "column_boxes", "load_stimuli", "make_stimuli",
           "resume_point", "shuffle_columns", "stimuli_key", "trial_list"]
