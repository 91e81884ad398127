from steps.train.train import app

app()
