from steps.register.register import app

app()
