"""Multi-label losses, each with its natural decoder; see the module docstrings for papers.

Every loss returns per-example values ``[B]`` and leaves the batch reduction to the caller
(as optax does); ``masked_mean`` is a convenience for it.
"""

from multilabel_jax.losses import decoders
from multilabel_jax.losses.count import abs_kl, count_distribution, count_scores, expected_count
from multilabel_jax.losses.expected_f1 import expected_f1_of_top_k, expected_f1_sets
from multilabel_jax.losses.decoders import (DecodedSets, by_count, calibrate_average_k,
                                            calibrate_class_thresholds, threshold, top_k)
from multilabel_jax.losses.fused import (linear_sigmoid_bce, linear_sigmoid_bce_reduced,
                                         linear_softmax_xent, linear_softmax_xent_reduced)
from multilabel_jax.losses.fused_two_head import (linear_two_head_average_k,
                                                  linear_two_head_average_k_reduced)
from multilabel_jax.losses.sharded_head import (sharded_linear_sigmoid_bce,
                                                sharded_linear_sigmoid_bce_reduced,
                                                sharded_linear_softmax_xent,
                                                sharded_linear_softmax_xent_reduced,
                                                sharded_linear_top_k)
from multilabel_jax.losses.streaming_top_k import linear_average_k_threshold, linear_top_k
from multilabel_jax.losses.embedding import (embedding_diagnostics, embedding_scores,
                                             label_embedding_cosine, pmi_label_embeddings,
                                             pmi_matrix)
from multilabel_jax.losses.fused_heads import FusedHead
from multilabel_jax.losses.hinge import squared_hinge
from multilabel_jax.losses.objectives import (OBJECTIVES, HeadOutput, Objective, TrainingData,
                                              accepted_options, get_objective,
                                              register_objective)
from multilabel_jax.losses.sigmoid import asymmetric, focal, sigmoid_bce
from multilabel_jax.losses.softmax import softmax_scores, softmax_xent
from multilabel_jax.losses.two_head import average_k_pseudo_labels, two_head_average_k
from multilabel_jax.losses.zlpr import zlpr
from multilabel_jax.metrics.ranking import masked_mean  # One copy, shared with metrics.
