"""The only importers of redis and rq: connections (and the embedded server), the rq facade, the Lua scripts.

Everything above this package asks it; nothing above it imports redis or rq (an import-linter contract).
"""
