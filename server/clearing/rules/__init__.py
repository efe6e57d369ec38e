"""Split rules: rule-set model, validation, compiler, evaluator, and the plan cache."""
