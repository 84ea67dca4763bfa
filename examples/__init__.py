"""Example services instrumented with opskit."""
