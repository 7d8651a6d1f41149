"""megatron-split: split model training on Megatron-Core."""

import warnings

# megatron.core warns on import that Apex / Transformer Engine are absent and it falls back to
# torch; the run log states the backend in use instead (ModelConfig.describe).
warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")
warnings.filterwarnings("ignore", message="Apex is not installed")
