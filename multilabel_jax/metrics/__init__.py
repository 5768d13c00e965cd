"""Multi-label metrics: ranking (P@k, R@k, nDCG@k, PSP@k, LRAP, coverage), exact mAP, set
metrics of decoded label sets, and their streaming (``clu``) forms.

Modules (import the names from here):

* :mod:`.ranking`: per-example ranking metrics on scores ``[N, C]``, and their
  ``*_from_top`` forms for the same @k metrics from per-row top-r candidates.
* :mod:`.average_precision`: exact mAP (macro and micro) in two streaming passes, with no
  ``[N, C]`` state; equal to ``sklearn.metrics.average_precision_score``.
* :mod:`.sets`: F1, precision, recall, Hamming loss, set size, average-K accuracy of sets.
* :mod:`.streaming`: the ``clu.metrics`` classes the evaluation loop merges batch by batch.
* :mod:`.histogram_average_precision`: the older histogram mAP bracket (a fast option, not
  the default).
* :mod:`.tie_orders`: per-class AP averaged over the orders of tied scores (host, dense), for
  scores that tie by design such as the simulator's Bayes-optimal marginals.

Labels are dense multi-hot ``[N, C]`` or int ids ``[N, L]`` padded with -1 everywhere.
"""

from multilabel_jax.metrics.average_precision import (ExactAveragePrecision,
                                                      average_precision_dense)
from multilabel_jax.metrics.ranking import (PSPTerms, average_precision_per_class,
                                            coverage_error, hits_of_top, label_counts,
                                            label_ranking_average_precision, masked_mean,
                                            mean_average_precision, ndcg_at_k, ndcg_from_top,
                                            precision_at_k, precision_from_top, propensities,
                                            psp_at_k, psp_at_k_terms, psp_terms_from_top,
                                            recall_at_k, recall_from_top, top_k_hits)
from multilabel_jax.metrics.sets import (SetCounts, average_k_accuracy, f1_score, hamming_loss,
                                         mean_set_size, precision_score, recall_score,
                                         set_counts)
from multilabel_jax.metrics.tie_orders import expected_average_precision_per_class
