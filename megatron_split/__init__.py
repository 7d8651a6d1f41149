"""megatron-split: split model training on Megatron-Core."""

import warnings

# megatron.core warns on import that Apex / Transformer Engine are absent and it falls back to
# torch; the run log states the backend in use instead (ModelConfig.describe).
warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")
warnings.filterwarnings("ignore", message="Apex is not installed")
# megatron.core's checkpoint loading calls torch APIs torch has deprecated (ShardedTensor,
# load_state_dict): nothing a user of this package can act on, repeated at every load.
warnings.filterwarnings("ignore", message="`load_state_dict` is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message="Please use DTensor instead", category=FutureWarning)
