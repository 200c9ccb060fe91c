import { setTimeout as sleep } from 'node:timers/promises'
import type { Measure, RoundResult } from './lib/load.ts'
import type { OurServer } from './lib/ours.ts'
import { callTool } from './lib/rpc.ts'

/** How long the reader is given to park in its long-poll before the send. */
const PARK_MS = 40
/** A probe whose read answered sooner than this was not parked: discarded, and counted. */
const PARKED_AT_LEAST_MS = PARK_MS / 2

/**
 * `bus_read` long-poll wake-up across replicas: a bus_read with wait_seconds waits on replica B;
 * replica A receives a bus_send on the same channel; the latency is from issuing that send to
 * the waiting read's reply arriving (send commit + NOTIFY through PostgreSQL + B's re-query +
 * both HTTP round trips). Probes run one at a time, so this is latency, not throughput.
 */
export function wakeMeasure (sender: OurServer, reader: OurServer, token: string, channel: string, startAfter: number): Measure {
  let after = startAfter
  return async (seconds): Promise<RoundResult> => {
    const latencies: number[] = []
    let errors = 0
    let notParked = 0
    const started = performance.now()
    const deadline = started + seconds * 1000
    while (performance.now() < deadline) {
      const read = callTool(reader.mcpUrl, token, 'bus_read', { channel, after, limit: 10, wait_seconds: 5 })
      await sleep(PARK_MS)
      const sentAt = performance.now()
      const sent = await callTool(sender.mcpUrl, token, 'bus_send', { channel, body: `wake ${latencies.length}` })
      const got = await read
      const latency = performance.now() - sentAt
      if (sent.isError || got.isError) {
        errors++
        if (!sent.isError) after = sent.data.id as number
        continue
      }
      const id = sent.data.id as number
      after = id
      if (!(got.data.messages as Array<{ id: number }>).some((m) => m.id === id)) {
        errors++ // woke without the message: the wait timed out or returned early
      } else if ((got.data.waited_ms as number) < PARKED_AT_LEAST_MS) {
        notParked++
      } else {
        latencies.push(latency)
      }
    }
    return {
      count: latencies.length,
      seconds: (performance.now() - started) / 1000,
      latencies,
      errors,
      non2xx: 0,
      discarded: notParked
    }
  }
}
