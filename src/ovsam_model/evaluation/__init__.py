"""Evaluation: GT-prompt IoU/accuracy (the paper's Table 1 protocol) and detector-box mask AP."""
