"""The TypeScript peer, ``@dcb-es/event-store-postgres``: its installation from the npm
registry into a scratch folder (:mod:`benchmarks.ts_peer.install`) and the Node script that
drives it (``driver.mjs``). The contender the suite measures is
:mod:`benchmarks.pg_ts_peer`. No code of the peer is kept in the repository."""
