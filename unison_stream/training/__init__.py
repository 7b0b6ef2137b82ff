"""Training: flow matching with bidirectional cross-modal forcing, few-step distillation, DDP."""
