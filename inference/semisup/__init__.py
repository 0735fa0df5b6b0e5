"""Semi-supervised learning with M2 (Kingma et al. 2014): mixed minibatches, training, the extended yardstick."""

from inference.semisup.batches import mixed_batches, split_rows
from inference.semisup.task import alpha_of, check_semi_supervised, class_log_likelihood, fit, is_semi_supervised, m2_task

__all__ = ["mixed_batches", "split_rows", "fit", "m2_task", "check_semi_supervised", "is_semi_supervised", "alpha_of",
           "class_log_likelihood"]
