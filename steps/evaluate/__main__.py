from mlrig.executors.warm import run_step

run_step("steps.evaluate.evaluate")
