"""What each stage's group holds (its ``GroupSpec``) and the readers of those groups.

One module per stage. A stage imports the spec it writes and the readers of what
it reads from here, never from another stage's module.
"""
