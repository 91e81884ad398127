from mlrig.warm import run_step

run_step("steps.report.report")
