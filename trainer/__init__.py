"""crackd trainer (host side): datasets, models, training, INT8 export, evaluation."""
