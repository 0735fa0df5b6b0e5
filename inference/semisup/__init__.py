"""Semi-supervised learning with M2 (Kingma et al. 2014): mixed minibatches, training, the extended yardstick."""

from inference.semisup.batches import mixed_batches, split_rows
from inference.semisup.task import alpha_of, check_semi_supervised, fit, is_semi_supervised, m2_task
from inference.semisup.validation import class_log_likelihood

__all__ = ["mixed_batches", "split_rows", "fit", "m2_task", "check_semi_supervised", "is_semi_supervised", "alpha_of",
           "class_log_likelihood"]
