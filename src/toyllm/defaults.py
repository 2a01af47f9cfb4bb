"""The numbers the demo, its commands and its evaluation share, each in one place, importable without the training
stack (the command line builds its help from them before torch is loaded)."""

FEEDBACK_ROUNDS = 2  # PPO, then one round of feedback: label its answers, retrain the judge, PPO again
LABEL_SAMPLES = 64  # answers the simulated labeller samples (full distribution) per PPO prompt
EVAL_SAMPLES = 32  # sampled answers per eval prompt (full distribution, seeded) for the sampling hit rate
# Greedy answers of the toy are a handful of words; a cap keeps a babbling model from running to n_positions.
MAX_NEW_TOKENS = 16
CHAT_MAX_NEW_TOKENS = 32  # `toyllm generate` and `chat`: room for a real model's sentence

# A real instruct model on a CPU (toyllm demo --model): fewer samples per question, answers up to CHAT_MAX_NEW_TOKENS
REAL_MODEL_EVAL_SAMPLES = 4
REAL_MODEL_LABEL_SAMPLES = 8
# PPO with its answers labelled, no second round: on Alice and Oz the second round moved the held-out score by
# +0.00 and +0.11 for ~5 of the demo's minutes (docs/real-models.md); --feedback-rounds 2 runs it
REAL_MODEL_FEEDBACK_ROUNDS = 1
REAL_MODEL_JUDGE_PAIRS = 96  # of the preference file, for the judge's pairwise accuracy (every pair on the toy)
