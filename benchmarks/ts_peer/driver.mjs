// The TypeScript peer's side of the benchmark: @dcb-es/event-store-postgres driven through
// its own API (PostgresEventStore.append / read, buildDecisionModel), one request per line
// on stdin, one JSON answer per line on stdout.
//
// Run by benchmarks/pg_ts_peer.py as
//     node --expose-gc driver.mjs PEER_DIR POOL_SIZE
// with the connection in the environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE,
// which node-postgres reads itself). PEER_DIR is the scratch folder the suite installed the
// peer into (benchmarks/ts_peer/install.py): no code of the peer lives in the repository, so
// its packages are resolved from there, not from this file's location.
//
// The Python side generates every event (the same ones the other contenders append) and
// sends them with the request; this side times each call with process.hrtime and answers
// with the latencies and the wall time of the block, so the figures exclude the pipe.

import { readFileSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { pathToFileURL } from "node:url"

const [peerDir, poolArg] = process.argv.slice(2)

/** The ES module entry of package `name` installed under `peerDir` (its exports' "import"). */
function esmEntry(name) {
    const root = join(peerDir, "node_modules", ...name.split("/"))
    const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8"))
    const dot = manifest.exports?.["."]
    const entry = (typeof dot === "string" ? dot : dot?.import) ?? manifest.module ?? manifest.main
    return pathToFileURL(join(root, entry)).href
}

// The postgres package imports its sibling by name from node_modules: importing the same
// file here gives one module instance, so SequencePosition and AppendConditionError are the
// classes the store itself uses.
const core = await import(esmEntry("@dcb-es/event-store"))
const { PostgresEventStore } = await import(esmEntry("@dcb-es/event-store-postgres"))
const pg = createRequire(join(peerDir, "package.json"))("pg")
const { AppendConditionError, Query, SequencePosition, Tags, buildDecisionModel } = core

const pool = new pg.Pool({ max: Number(poolArg ?? 8) })
const store = new PostgresEventStore({ pool }) // the defaults, as an application gets them

const MAX_ERRORS = 20 // a writer that failed this often stops (as benchmarks/timing.py)

const now = () => process.hrtime.bigint()

function event([type, tag, data]) {
    return { type, tags: Tags.from([tag]), data, metadata: {} }
}

function scope(types, tag) {
    return Query.fromItems([{ types, tags: Tags.from([tag]) }])
}

function position(value) {
    return SequencePosition.fromString(String(value))
}

/** Append `ev` unless an event of its (type, tag) lies after `after`; the new position, or
 * null when the condition failed. */
async function appendIf(ev, after) {
    const condition = { failIfEventsMatch: scope([ev[0]], ev[1]), after: position(after) }
    try {
        const pos = await store.append({ events: event(ev), condition })
        return Number(pos.toString())
    } catch (err) {
        if (err instanceof AppendConditionError) return null
        throw err
    }
}

/** One decision cycle on `tag`: project the scope (a count), decide, append on condition. */
async function decide(types, type, tag, data) {
    const when = Object.fromEntries(types.map(t => [t, (_, s) => s + 1]))
    const { state, appendCondition } = await buildDecisionModel(store, {
        seen: { tagFilter: Tags.from([tag]), init: 0, when }
    })
    const ev = [type, tag, { ...data, seen: state.seen }]
    try {
        await store.append({ events: event(ev), condition: appendCondition })
        return true
    } catch (err) {
        if (err instanceof AppendConditionError) return false
        throw err
    }
}

async function consume(query) {
    let count = 0
    for await (const _ of store.read(query)) count += 1
    return count
}

/** A field of /proc/self/status, in kB (null where there is none). */
function statusKb(field) {
    try {
        const found = readFileSync("/proc/self/status", "utf8").match(new RegExp(`^${field}:\\s+(\\d+)`, "m"))
        return found ? Number(found[1]) : null
    } catch {
        return null
    }
}

/** Time `calls` calls of `op(i)` (each returns the units it completed). */
async function timed(calls, op) {
    globalThis.gc?.() // as the Python side's gc.collect() before each block
    const latencies = []
    const counters = {}
    let units = 0
    const start = now()
    for (let i = 0; i < calls; i++) {
        const t0 = now()
        units += await op(i, counters)
        latencies.push(Number(now() - t0))
    }
    const wall = Number(now() - start)
    return { latencies_ns: latencies, wall_ns: wall, units, calls, counters }
}

/** Concurrent writers (async tasks over the pool) until `seconds` have passed. */
async function writers(steps, seconds) {
    const outcomes = steps.map(() => ({ latencies: [], successes: 0, conflicts: 0, errors: [] }))
    globalThis.gc?.()
    const start = now()
    const end = start + BigInt(Math.round(seconds * 1e9))
    await Promise.all(
        steps.map(async (step, i) => {
            const out = outcomes[i]
            while (now() < end) {
                const t0 = now()
                let ok
                try {
                    ok = await step()
                } catch (err) {
                    out.errors.push(`${err.name}: ${err.message}`)
                    if (out.errors.length > MAX_ERRORS) return
                    continue
                }
                out.latencies.push(Number(now() - t0))
                if (ok) out.successes += 1
                else out.conflicts += 1
            }
        })
    )
    const wall = Number(now() - start)
    const pooled = { latencies_ns: [], wall_ns: wall, units: 0, calls: 0, counters: { conflicts: 0 } }
    const errors = []
    for (const out of outcomes) {
        pooled.latencies_ns.push(...out.latencies)
        pooled.units += out.successes
        pooled.calls += out.successes + out.conflicts
        pooled.counters.conflicts += out.conflicts
        errors.push(...out.errors)
    }
    return { ...pooled, errors }
}

function distinctWriter({ events, after }) {
    let last = after
    let i = 0
    return async () => {
        const pos = await appendIf(events[i++ % events.length], last)
        if (pos === null) return false
        last = pos
        return true
    }
}

function hotWriter(types, type, { tag, datas }) {
    let i = 0
    return () => decide(types, type, tag, datas[i++ % datas.length])
}

const handlers = {
    async install() {
        await store.ensureInstalled()
        return { ok: true }
    },
    // S1: one event per call, no condition.
    append: ({ events }) =>
        timed(events.length, async i => {
            await store.append({ events: event(events[i]) })
            return 1
        }),
    // S2: each append conditional on its (type, tag) after the last position this writer
    // knows (the head it was given, then its own last append).
    async append_if({ events, after }) {
        let last = after
        const result = await timed(events.length, async i => {
            const pos = await appendIf(events[i], last)
            if (pos === null) throw new Error("unexpected conflict in a single-writer S2")
            last = pos
            return 1
        })
        return { ...result, after: last }
    },
    // S2': the same append with a stale `after`: every one must be rejected.
    reject: ({ items }) =>
        timed(items.length, async i => {
            const [type, tag, data, after] = items[i]
            if ((await appendIf([type, tag, data], after)) !== null)
                throw new Error("a stale append was accepted")
            return 1
        }),
    // S3: one call appends a batch.
    batch: ({ batches }) =>
        timed(batches.length, async i => {
            await store.append({ events: batches[i].map(event) })
            return batches[i].length
        }),
    // S4: the events of the types on one tag.
    read: ({ types, tags }) => timed(tags.length, i => consume(scope(types, tags[i]))),
    // S5: the whole store.
    read_all: ({ calls }) => timed(calls, () => consume(Query.all())),
    // S5's memory, as benchmarks/memory.py measures a Python process: the growth of the
    // resident set over one full read (VmHWM after it minus VmRSS before it, the high-water
    // mark reset through /proc/self/clear_refs), after a small read readied the process.
    async memory({ types, tag }) {
        await consume(scope(types, tag))
        globalThis.gc?.()
        const before = statusKb("VmRSS")
        let reset = before !== null
        try {
            writeFileSync("/proc/self/clear_refs", "5")
        } catch {
            reset = false
        }
        const events = await consume(Query.all())
        const peak = statusKb("VmHWM")
        const growth = reset && peak !== null ? (peak - before) / 1024 : null
        return { events_read: events, rss_growth_mb: growth }
    },
    // S6: decision cycles, one writer.
    decide: ({ types, type, items }) =>
        timed(items.length, async (i, counters) => {
            const [tag, data] = items[i]
            if (!(await decide(types, type, tag, data)))
                counters.conflicts = (counters.conflicts ?? 0) + 1
            return 1
        }),
    // S7a: writers on their own tags, conditional appends.
    distinct_writers: ({ writers: ws, seconds }) => writers(ws.map(distinctWriter), seconds),
    // S7b: writers running decision cycles on one tag.
    hot_writers: ({ types, type, writers: ws, seconds }) =>
        writers(
            ws.map(w => hotWriter(types, type, w)),
            seconds
        )
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity })
for await (const line of lines) {
    if (!line.trim()) continue
    const request = JSON.parse(line)
    if (request.op === "close") break
    let answer
    try {
        const handler = handlers[request.op]
        if (!handler) throw new Error(`unknown op ${request.op}`)
        answer = await handler(request)
    } catch (err) {
        answer = { error: `${err.name}: ${err.message}` }
    }
    process.stdout.write(JSON.stringify(answer) + "\n")
}
await pool.end()
