"""The numbers the demo, its commands and its evaluation share, each in one place, importable without the training
stack (the command line builds its help from them before torch is loaded)."""

FEEDBACK_ROUNDS = 2  # PPO, then one round of feedback: label its answers, retrain the judge, PPO again
LABEL_SAMPLES = 64  # answers the simulated labeller samples (full distribution) per PPO prompt
EVAL_SAMPLES = 32  # sampled answers per eval prompt (full distribution, seeded) for the sampling hit rate
# Greedy answers of the toy are a handful of words; a cap keeps a babbling model from running to n_positions.
MAX_NEW_TOKENS = 16
CHAT_MAX_NEW_TOKENS = 32  # `toyllm generate` and `chat`: room for a real model's sentence
