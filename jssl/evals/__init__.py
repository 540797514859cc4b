"""Evaluation: features extracted once, probes as pure functions of arrays.

  features.make_feature_fn / features.extract   jitted sharded feature pass
  linear_probe.linear_probe                     logistic regression on frozen features
  knn.knn_accuracy                              weighted kNN (InstDisc protocol)
"""
