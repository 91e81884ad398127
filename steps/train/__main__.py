from mlrig.executors.warm import run_step

run_step("steps.train.train")
