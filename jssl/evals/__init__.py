"""Evaluation: features extracted once, probes as pure functions of arrays.

  features.make_feature_fn / features.extract   jitted sharded feature pass
  linear_probe.linear_probe                     logistic regression on frozen features
  knn.knn_accuracy                              weighted kNN (InstDisc protocol);
                                                `train_chunk_size` streams the train side
                                                (memory bounded for 1.2M x D)
  ncm.ncm_accuracy                              nearest class mean, cosine or Euclidean
  gda.gda_accuracy / gda.gda_fit                closed-form shrunk-covariance GDA
                                                (training-free, Wang et al. 2024)
  fewshot.fewshot_accuracy                      N-way K-shot episodes, big_vision ridge
                                                and NCM, mean +- 95% interval
  moments.moment_probe / moments.moment_features   linear probe on first + second
                                                moments of tokens / feature maps
  finetune.train_classifier                     the papers' trained protocols on augmented
                                                crops: linear evaluation (frozen encoder,
                                                SimCLR / MAE presets) and label-fraction
                                                fine-tuning (1% / 10%, SimCLR preset)
  diagnostics.diagnostics / collapse_warning    alignment, uniformity, RankMe, spectrum,
                                                std collapse check, Vendi, NC1,
                                                intra-class variance, class separation
"""
