"""The Replicate fake: deployments, releases, instances and predictions on `/v1` (D6, D7, D18).

`app` assembles it (`ReplicateSandbox`), `api` serves the platform routes the replicate client
and the operator call, `platform` is the state machine on the sandbox clock, `catalog` holds
the account, hardware, prices and seed models, `inference` and `cog_worker` run Ferry's cog
predictor in real processes. Started by `ferry.sandbox.__main__`.
"""
