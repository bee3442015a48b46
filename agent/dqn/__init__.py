"""The algorithm: Q-networks built from classic's blocks, acting (Keras and numpy), the compiled DQN update.

Mnih et al. 2015, with Double DQN (van Hasselt et al. 2016), dueling heads (Wang et al. 2016),
n-step returns and prioritized replay weights (Schaul et al. 2016).
May import: `agent.core`, `classic`, `replay` (the `Batch` type), `envs`, `common`.
"""
