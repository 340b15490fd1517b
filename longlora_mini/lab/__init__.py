"""The miniature's lab: the mini base model and its pretraining, the long-QA set, the paper's grid and the demo,
the course's exercise checks. It builds on the library (`longlora_mini`); nothing in the library imports it but the
CLI and the trainer's "mix" data source (the mini base model's pretraining mixture)."""
