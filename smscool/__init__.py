"""The floor above `streams/` and `connectors/`: the `smscool` command line, the demo
and the supervision of the processes they start. Nothing below imports it."""
