"""`mdm generate`: answer prompts with a trained run, a model folder or a hub model."""
