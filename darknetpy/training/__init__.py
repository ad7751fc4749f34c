"""Training (rank 4): the loop (:mod:`.train`), optimizer and EMA (:mod:`.optim`), the learning-rate schedule
(:mod:`.schedule`), multi-scale resizing (:mod:`.multiscale`), checkpoints (:mod:`.checkpoint`), the loss chart
(:mod:`.chart`) and multi-GPU runs (:mod:`.distributed`)."""
