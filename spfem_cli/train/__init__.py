"""Training: the shared loop (:mod:`spfem_cli.train.loop`) and one module per trained model."""
