import { sql } from 'drizzle-orm'
import t from 'tap'
import { openDatabase, rowsOf, type Database } from '../../src/db/client.ts'
import { isDatabaseUnavailable } from '../../src/db/errors.ts'
import { hashSecret } from '../../src/lib/secrets.ts'
import { createTestDatabase } from '../helpers/database.ts'
import { pkcePair } from '../helpers/oauth.ts'
import { principalWithToken, startTestServer, type TestServer } from '../helpers/server.ts'
import { CuttableProxy } from '../helpers/tcp-proxy.ts'
import { fileNeeds, postgres } from '../helpers/requirements.ts'

/**
 * PostgreSQL goes away under load and comes back (issue 5, item 3). A TCP proxy sits between a
 * listening server and PostgreSQL; clients loop bus_send + bus_read and the token endpoint's
 * authorization_code and refresh grants while the proxy is cut (every socket destroyed, new
 * ones refused) for 2 s and restored. During the outage every answer is a success or a 503 with
 * Retry-After, never a 500 and never a hang; /readyz says 503 and then 200; the service
 * recovers by itself; no code is ever consumed without its tokens, no refresh token rotated
 * without its successor; every acknowledged send is stored.
 */

const OUTAGE_MS = 2000
/** No request may take longer than this, outage or not (connect_timeout is 5 s). */
const HANG_MS = 10_000
/** After the database is back, each kind of request must succeed again within this. */
const RECOVERY_MS = 5000
const REDIRECT_URI = 'http://localhost:53682/callback'

interface Outcome { kind: string, at: number, ms: number, status: number, problem?: string }

if (fileNeeds(t, [postgres()])) {
  t.test('PostgreSQL cut for 2 s under load', async (t) => {
    // The test's own view of the database, direct; the server's goes through the proxy.
    const direct = await createTestDatabase(t)
    const { proxy, url } = await CuttableProxy.inFrontOf(direct.url as string)
    t.teardown(async () => { await proxy.cut() })
    const proxiedUrl = new URL(url)
    const proxied: Database = await openDatabase({ databaseUrl: proxiedUrl.toString(), dataDir: '', poolSize: 10 })
    t.teardown(() => proxied.close().catch(() => {}))

    const server: TestServer = await startTestServer(t, {
      listen: true,
      database: proxied,
      databaseUrl: proxiedUrl.toString(),
      logLevel: 'warn',
      env: { AUTO_APPROVE_PRINCIPAL: 'brain', RATE_LIMIT_MULTIPLIER: '0' }
    })
    const apiToken = await principalWithToken(server, 'brain')
    const registered = await fetch(`${server.baseUrl}/oauth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_name: 'outage', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none' })
    })
    const clientId = ((await registered.json()) as { client_id: string }).client_id

    const outcomes: Outcome[] = []
    const started = Date.now()
    /** One HTTP request, timed, its status checked: success, or 503 with Retry-After. */
    const request = async (kind: string, url: string, init: RequestInit, ok: number[]): Promise<{ status: number, body: string, headers: Headers } | undefined> => {
      const at = Date.now()
      let outcome: Outcome
      try {
        const response = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(HANG_MS), ...init })
        const body = await response.text()
        outcome = { kind, at: at - started, ms: Date.now() - at, status: response.status }
        if (response.status === 503) {
          // (Readiness probes do not read Retry-After; every other 503 must carry it.)
          if (response.headers.get('retry-after') === null && kind !== 'readyz') outcome.problem = '503 without Retry-After'
        } else if (!ok.includes(response.status)) {
          outcome.problem = `unexpected ${response.status}: ${body.slice(0, 200)}`
        } else if (kind.startsWith('mcp') && /"error"\s*:/.test(body)) {
          outcome.problem = `JSON-RPC error in a ${response.status}: ${body.slice(0, 200)}`
        }
        outcomes.push(outcome)
        return { status: response.status, body, headers: response.headers }
      } catch (err) {
        outcome = { kind, at: at - started, ms: Date.now() - at, status: 0, problem: `no answer: ${(err as Error).name} ${(err as Error).message}` }
        outcomes.push(outcome)
        return undefined
      }
    }
    const mcp = async (kind: string, tool: string, args: Record<string, unknown>): Promise<any> => {
      const response = await request(`mcp ${kind}`, `${server.baseUrl}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${apiToken}` },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: tool, arguments: args } })
      }, [200])
      if (response?.status !== 200) return undefined
      const body = JSON.parse(response.body) as { result?: { isError?: boolean, structuredContent?: unknown } }
      return body.result?.isError === true ? undefined : body.result?.structuredContent
    }
    const tokenForm = async (kind: string, form: Record<string, string>): Promise<{ status: number, body: any } | undefined> => {
      const response = await request(kind, `${server.baseUrl}/oauth/token`, {
        method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form)
      }, [200])
      if (response === undefined) return undefined
      let body: any
      try { body = JSON.parse(response.body) } catch {}
      return { status: response.status, body }
    }

    let running = true
    const acknowledged: number[] = []
    /** Every code the token endpoint was asked to redeem, and what it answered. */
    const redemptions: Array<{ code: string, verifier: string, status: number | undefined, accessToken?: string }> = []
    const refreshes: Array<{ status: number | undefined, presented: string, issued?: string }> = []
    const readiness: Array<{ at: number, status: number }> = []

    const busWorker = async (worker: number): Promise<void> => {
      // eslint-disable-next-line no-unmodified-loop-condition -- the test's main flow clears it
      for (let n = 0; running; n++) {
        const sent = await mcp('bus_send', 'bus_send', { channel: 'load', body: `w${worker}-${n}` }) as { id?: number } | undefined
        if (typeof sent?.id === 'number') acknowledged.push(sent.id)
        await mcp('bus_read', 'bus_read', { channel: 'load', after: Math.max(0, (sent?.id ?? 0) - 5), limit: 10 })
      }
    }
    const authorize = async (): Promise<{ code: string, verifier: string } | undefined> => {
      const { verifier, challenge } = pkcePair()
      const query = new URLSearchParams({
        response_type: 'code',
        client_id: clientId,
        redirect_uri: REDIRECT_URI,
        code_challenge: challenge,
        code_challenge_method: 'S256',
        state: 's',
        resource: server.config.resourceUrl
      })
      const authorized = await request('authorize', `${server.baseUrl}/oauth/authorize?${query.toString()}`, {}, [302])
      const code = authorized?.status === 302 ? new URL(authorized.headers.get('location') ?? '').searchParams.get('code') : null
      return code === null ? undefined : { code, verifier }
    }
    // Codes and refresh tokens in stock, so the token endpoint is asked while authorize cannot answer.
    const codes: Array<{ code: string, verifier: string }> = []
    const refreshTokens: string[] = []
    const oauthWorker = async (): Promise<void> => {
      // eslint-disable-next-line no-unmodified-loop-condition -- the test's main flow clears it
      while (running) {
        const fresh = await authorize()
        if (fresh !== undefined) codes.push(fresh)
        const next = codes.shift()
        if (next !== undefined) {
          const redeemed = await tokenForm('token authorization_code', {
            grant_type: 'authorization_code', code: next.code, code_verifier: next.verifier, redirect_uri: REDIRECT_URI, client_id: clientId
          })
          redemptions.push({ ...next, status: redeemed?.status, accessToken: redeemed?.status === 200 ? redeemed.body.access_token : undefined })
          if (redeemed?.status === 200) refreshTokens.push(redeemed.body.refresh_token as string)
        }
        const presented = refreshTokens.shift()
        if (presented !== undefined) {
          const refreshed = await tokenForm('token refresh_token', { grant_type: 'refresh_token', refresh_token: presented, client_id: clientId })
          refreshes.push({ status: refreshed?.status, presented, issued: refreshed?.status === 200 ? refreshed.body.refresh_token : undefined })
          if (refreshed?.status === 200) refreshTokens.push(refreshed.body.refresh_token as string)
        }
      }
    }
    const readinessProbe = async (): Promise<void> => {
      // eslint-disable-next-line no-unmodified-loop-condition -- the test's main flow clears it
      while (running) {
        const response = await request('readyz', `${server.baseUrl}/readyz`, {}, [200])
        readiness.push({ at: Date.now() - started, status: response?.status ?? 0 })
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    }

    for (let i = 0; i < 16; i++) {
      const stocked = await authorize()
      if (stocked !== undefined) codes.push(stocked)
    }
    for (let i = 0; i < 8; i++) {
      const next = codes.shift() as { code: string, verifier: string }
      const redeemed = await tokenForm('token authorization_code', {
        grant_type: 'authorization_code', code: next.code, code_verifier: next.verifier, redirect_uri: REDIRECT_URI, client_id: clientId
      })
      redemptions.push({ ...next, status: redeemed?.status, accessToken: redeemed?.body?.access_token })
      refreshTokens.push(redeemed?.body?.refresh_token as string)
    }

    const workers = [busWorker(1), busWorker(2), busWorker(3), oauthWorker(), oauthWorker(), readinessProbe()]
    await new Promise((resolve) => setTimeout(resolve, 1500))
    // A transaction open when the database goes away must fail like any query (a 503), not take
    // the process down (docs/decisions/0020). On a pool of its own (the same driver and options
    // as the server's), so no other query reuses its connection first and hides the defect.
    const lone: Database = await openDatabase({ databaseUrl: proxiedUrl.toString(), dataDir: '', poolSize: 1 })
    t.teardown(() => lone.close().catch(() => {}))
    let statementDone = false
    let resume = (): void => {}
    const gate = new Promise<void>((resolve) => { resume = resolve })
    const openTransaction = lone.db.transaction(async (tx) => {
      await tx.execute(sql`select 1`)
      statementDone = true
      await gate
      await tx.execute(sql`select 2`)
    }).then(() => 'committed', (err: unknown) => err)
    // eslint-disable-next-line no-unmodified-loop-condition -- the statement's callback sets it
    while (!statementDone) await new Promise((resolve) => setTimeout(resolve, 5))
    const cutAt = Date.now() - started
    await proxy.cut()
    setTimeout(() => { resume() }, 100)
    await new Promise((resolve) => setTimeout(resolve, OUTAGE_MS))
    await proxy.restore()
    const restoredAt = Date.now() - started
    t.comment(`proxy cut at ${cutAt} ms, restored at ${restoredAt} ms`)

    // Recovery without a restart: every kind of request succeeds again, soon.
    const recovered = async (kind: string): Promise<number | undefined> => {
      const deadline = Date.now() + RECOVERY_MS + HANG_MS
      for (;;) {
        const first = outcomes.find((o) => o.kind === kind && o.at >= restoredAt && o.status >= 200 && o.status < 400)
        if (first !== undefined) return first.at + first.ms - restoredAt
        if (Date.now() > deadline) return undefined
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    }
    const recovery = await Promise.all(['mcp bus_send', 'mcp bus_read', 'authorize', 'token authorization_code', 'token refresh_token', 'readyz'].map(async (kind) => [kind, await recovered(kind)] as const))
    await new Promise((resolve) => setTimeout(resolve, 1000))
    running = false
    await Promise.all(workers)

    const during = outcomes.filter((o) => o.at >= cutAt && o.at < restoredAt)
    const summary = new Map<string, string>()
    for (const o of outcomes) summary.set(`${o.kind} ${o.status}`, String(Number(summary.get(`${o.kind} ${o.status}`) ?? 0) + 1))
    t.comment(`${outcomes.length} requests: ${[...summary].map(([k, v]) => `${k}×${v}`).sort().join(', ')}`)

    t.test('during the outage: a success or a 503 with Retry-After, never a 500, never a hang', async (t) => {
      const problems = outcomes.filter((o) => o.problem !== undefined)
      t.same(problems.map((o) => `${o.kind} at ${o.at} ms: ${o.problem ?? ''}`), [], 'every answer was a success or a 503 with Retry-After')
      const slowest = outcomes.reduce((max, o) => Math.max(max, o.ms), 0)
      t.ok(slowest < HANG_MS, `the slowest request took ${slowest} ms`)
      t.ok(during.some((o) => o.status === 503 && o.kind.startsWith('mcp')), 'the outage was felt on /mcp (503)')
      t.ok(outcomes.some((o) => o.status === 503 && o.kind.startsWith('token')), 'and on the token endpoint (503)')
      t.notOk(server.logs.some((line) => /"level":(50|60)/.test(line)), 'nothing was logged as an error (only warnings)')
    })

    t.test('a transaction open when the database went away', async (t) => {
      const outcome = await openTransaction
      t.ok(isDatabaseUnavailable(outcome), `failed as "database unavailable" (${outcome instanceof Error ? (outcome as { code?: string }).code ?? outcome.message : String(outcome)}), and the process is still here`)
    })

    t.test('/readyz: 503 during the outage, 200 after', async (t) => {
      t.ok(readiness.some((r) => r.at < cutAt && r.status === 200), 'ready before')
      t.ok(readiness.some((r) => r.at >= cutAt && r.at < restoredAt && r.status === 503), 'not ready during the outage')
      t.equal(readiness.at(-1)?.status, 200, 'ready again at the end')
      t.ok(readiness.every((r) => r.status === 200 || r.status === 503), 'readiness only ever says 200 or 503')
    })

    t.test('recovery without a restart', async (t) => {
      for (const [kind, ms] of recovery) {
        t.ok(ms !== undefined && ms < RECOVERY_MS, `${kind} succeeded again ${ms ?? 'never'} ms after the database came back`)
      }
    })

    t.test('no half-done grant', async (t) => {
      const db = direct.database.db
      const [orphans] = rowsOf<{ n: string | number }>(await db.execute(sql`
        select count(*) as n from oauth_codes c
        where c.consumed_at is not null and not exists (select 1 from oauth_tokens t where t.grant_id = c.grant_id)`))
      t.equal(Number(orphans?.n), 0, 'no code is consumed without tokens issued for its grant')
      const [rotatedOrphans] = rowsOf<{ n: string | number }>(await db.execute(sql`
        select count(*) as n from oauth_tokens r
        where r.kind = 'refresh' and r.rotated_at is not null
          and not exists (select 1 from oauth_tokens s where s.grant_id = r.grant_id and s.kind = 'refresh' and s.id > r.id)`))
      t.equal(Number(rotatedOrphans?.n), 0, 'no refresh token is rotated without its successor issued')

      let redeemedLater = 0
      let committedButUnanswered = 0
      for (const redemption of redemptions) {
        const [row] = rowsOf<{ consumed_at: unknown, tokens: string | number }>(await db.execute(sql`
          select c.consumed_at, (select count(*) from oauth_tokens t where t.grant_id = c.grant_id) as tokens
          from oauth_codes c where c.code_hash = ${hashSecret(redemption.code)}`))
        if (row === undefined) {
          t.fail('a code the server issued is not in the database')
          continue
        }
        if (redemption.status === 200) {
          if (row.consumed_at === null || Number(row.tokens) < 2) t.fail(`a 200 redemption left the code ${row.consumed_at === null ? 'unconsumed' : 'without tokens'}`)
          const [stored] = rowsOf<{ n: string | number }>(await db.execute(sql`select count(*) as n from oauth_tokens where token_hash = ${hashSecret(redemption.accessToken ?? '')}`))
          if (Number(stored?.n) !== 1) t.fail('the access token of a 200 redemption is not stored')
        } else if (row.consumed_at === null) {
          // Nothing happened: the code can still be redeemed, now that the database is back.
          const again = await fetch(`${server.baseUrl}/oauth/token`, {
            method: 'POST',
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
            body: new URLSearchParams({ grant_type: 'authorization_code', code: redemption.code, code_verifier: redemption.verifier, redirect_uri: REDIRECT_URI, client_id: clientId })
          })
          if (again.status === 200) redeemedLater++
          else t.fail(`an unconsumed code could not be redeemed afterwards: ${again.status} ${await again.text()}`)
        } else {
          // The commit reached the database but its answer did not reach the server: consumed
          // with its tokens (the client retries, is told the code is spent, and starts over).
          if (Number(row.tokens) < 2) t.fail('a failed redemption left the code consumed without tokens')
          else committedButUnanswered++
        }
      }
      const failed = redemptions.filter((r) => r.status !== 200).length
      t.ok(redemptions.length > 0, `${redemptions.length} redemptions, ${failed} failed; ${redeemedLater} of those redeemed afterwards, ${committedButUnanswered} committed unanswered`)
      t.equal(redeemedLater + committedButUnanswered, failed, 'every failed redemption is accounted for')

      for (const refresh of refreshes.filter((r) => r.status === 200)) {
        const [row] = rowsOf<{ rotated_at: unknown }>(await db.execute(sql`select rotated_at from oauth_tokens where token_hash = ${hashSecret(refresh.presented)}`))
        if (row?.rotated_at === null || row === undefined) t.fail('a 200 refresh did not rotate the presented token')
        const [issued] = rowsOf<{ n: string | number }>(await db.execute(sql`select count(*) as n from oauth_tokens where token_hash = ${hashSecret(refresh.issued ?? '')}`))
        if (Number(issued?.n) !== 1) t.fail('the refresh token a 200 refresh returned is not stored')
      }
      let refreshedLater = 0
      let rotatedButUnanswered = 0
      for (const refresh of refreshes.filter((r) => r.status !== 200)) {
        const [row] = rowsOf<{ rotated_at: unknown, successors: string | number }>(await db.execute(sql`
          select r.rotated_at, (select count(*) from oauth_tokens s where s.grant_id = r.grant_id and s.kind = 'refresh' and s.id > r.id) as successors
          from oauth_tokens r where r.token_hash = ${hashSecret(refresh.presented)}`))
        if (row === undefined) {
          t.fail('a refresh token the server issued is not in the database')
        } else if (row.rotated_at === null) {
          const again = await fetch(`${server.baseUrl}/oauth/token`, {
            method: 'POST',
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
            body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refresh.presented, client_id: clientId })
          })
          if (again.status === 200) refreshedLater++
          else t.fail(`an unrotated refresh token could not be used afterwards: ${again.status} ${await again.text()}`)
        } else if (Number(row.successors) === 0) {
          t.fail('a failed refresh rotated the token without issuing its successor')
        } else {
          rotatedButUnanswered++
        }
      }
      const failedRefreshes = refreshes.filter((r) => r.status !== 200).length
      t.equal(refreshedLater + rotatedButUnanswered, failedRefreshes,
        `${refreshes.length} refreshes, ${failedRefreshes} failed; ${refreshedLater} of those refreshed afterwards, ${rotatedButUnanswered} committed unanswered`)
    })

    t.test('every acknowledged send is stored and readable', async (t) => {
      t.ok(acknowledged.length > 20, `${acknowledged.length} sends acknowledged`)
      const stored = new Set(rowsOf<{ id: string | number }>(await direct.database.db.execute(sql`
        select m.id from messages m join channels c on c.id = m.channel_id where c.name = 'load'`)).map((r) => Number(r.id)))
      t.same(acknowledged.filter((id) => !stored.has(id)), [], 'no acknowledged message is missing')
      const last = Math.max(...acknowledged)
      const read = await mcp('bus_read', 'bus_read', { channel: 'load', after: last - 1 }) as { messages: Array<{ id: number }> } | undefined
      t.equal(read?.messages[0]?.id, last, 'the newest acknowledged message reads back through the server')
    })
  })
}
