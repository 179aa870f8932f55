"""Training as Caffe trains: train/val nets, Caffe's solvers and learning-rate policies, solver
snapshots, Caffe's data layers, and a ``torch.optim`` face of the same update rules."""
