"""One package per independent consumer: a pure decision core and a thin FastStream shell."""
