#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander'
import { ConfigError, loadConfig } from './config.ts'
import { formatReport, runDoctor } from './doctor/run.ts'
import { VERSION } from './version.ts'

/**
 * `bus-mcp`: the admin CLI. Every command but `migrate` talks to the running server's admin API
 * (BUS_ADMIN_URL / --admin-url, token from BUS_ADMIN_TOKEN), so it works the same with the
 * embedded database and with PostgreSQL. `--json` prints one JSON value for scripts.
 */

class CliError extends Error {}

interface GlobalOptions { adminUrl: string, json: boolean }

const program = new Command()
  .name('bus-mcp')
  .description('Administer a Bus MCP Server through its admin API')
  .version(VERSION, '--version', 'print the version')
  .addOption(new Option('--admin-url <url>', 'admin API address').env('BUS_ADMIN_URL').default('http://127.0.0.1:8089'))
  .option('--json', 'print one JSON value (for scripts)', false)
  .showHelpAfterError()

function globals (): GlobalOptions {
  return program.opts<GlobalOptions>()
}

async function api<T> (method: string, path: string, body?: unknown): Promise<T> {
  const { adminUrl } = globals()
  const headers: Record<string, string> = { accept: 'application/json' }
  const token = process.env.BUS_ADMIN_TOKEN
  if (token !== undefined && token !== '') headers.authorization = `Bearer ${token}`
  if (body !== undefined) headers['content-type'] = 'application/json'
  let response: Response
  try {
    response = await fetch(new URL(path, adminUrl.endsWith('/') ? adminUrl : `${adminUrl}/`), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(30_000)
    })
  } catch (err) {
    throw new CliError(`cannot reach the admin API at ${adminUrl} (${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}); is the server running? (set --admin-url or BUS_ADMIN_URL)`)
  }
  const text = await response.text()
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch {
    throw new CliError(`the admin API answered ${response.status} with a body that is not JSON`)
  }
  if (!response.ok) {
    const message = (data as { message?: string }).message ?? `HTTP ${response.status}`
    throw new CliError(response.status === 401 ? `${message}` : message)
  }
  return data as T
}

function output (value: unknown, human: () => string): void {
  process.stdout.write(globals().json ? `${JSON.stringify(value)}\n` : `${human()}\n`)
}

function table (rows: Array<Record<string, unknown>>, columns: string[]): string {
  if (rows.length === 0) return '(none)'
  const cell = (v: unknown): string => v === null || v === undefined ? '-' : Array.isArray(v) ? v.join(' ') : String(v)
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)))
  const line = (values: string[]): string => values.map((v, i) => v.padEnd(widths[i] ?? 0)).join('  ').trimEnd()
  return [line(columns.map((c) => c.toUpperCase())), ...rows.map((r) => line(columns.map((c) => cell(r[c]))))].join('\n')
}

function positiveInt (value: string): number {
  if (!/^[0-9]+$/.test(value) || Number(value) < 1) throw new InvalidArgumentError('expected a positive whole number')
  return Number(value)
}

const principal = program.command('principal').description('principals: the agents and people on the bus')
principal.command('add <name>')
  .description('create a principal')
  .option('--scopes <scopes>', 'space-separated scopes', 'bus:read bus:write')
  .action(async (name: string, opts: { scopes: string }) => {
    const created = await api<Record<string, unknown>>('POST', 'principals', { name, scopes: opts.scopes })
    output(created, () => `principal ${String(created.name)} created with scopes ${(created.scopes as string[]).join(' ')}`)
  })
principal.command('list').description('list principals').action(async () => {
  const { principals } = await api<{ principals: Array<Record<string, unknown>> }>('GET', 'principals')
  output(principals, () => table(principals, ['name', 'scopes', 'disabled', 'created_at']))
})
for (const action of ['disable', 'enable'] as const) {
  principal.command(`${action} <name>`)
    .description(action === 'disable' ? 'disable a principal: its tokens stop working at once' : 'enable a disabled principal again')
    .action(async (name: string) => {
      const updated = await api<Record<string, unknown>>('POST', `principals/${encodeURIComponent(name)}/${action}`)
      output(updated, () => `principal ${String(updated.name)} ${action}d`)
    })
}

const token = program.command('token').description('API tokens: static bearer tokens for command-line agents')
token.command('issue')
  .description('issue an API token (shown once)')
  .requiredOption('--principal <name>', 'the principal the token acts as')
  .option('--scopes <scopes>', 'space-separated scopes (default: all of the principal\'s)')
  .option('--label <label>', 'a note to tell tokens apart')
  .option('--expires-in <seconds>', 'expire after this many seconds', positiveInt)
  .action(async (opts: { principal: string, scopes?: string, label?: string, expiresIn?: number }) => {
    const issued = await api<Record<string, unknown>>('POST', 'tokens', {
      principal: opts.principal, scopes: opts.scopes, label: opts.label, expires_in: opts.expiresIn
    })
    output(issued, () => [
      `API token #${String(issued.id)} for ${String(issued.principal)} (${(issued.scopes as string[]).join(' ')})${issued.expires_at === null ? '' : `, expires ${String(issued.expires_at)}`}:`,
      '',
      `  ${String(issued.token)}`,
      '',
      'It is shown only this once; store it now. Use it as: Authorization: Bearer <token>'
    ].join('\n'))
  })
token.command('list')
  .description('list API tokens (never their secrets)')
  .option('--principal <name>', 'only this principal\'s tokens')
  .action(async (opts: { principal?: string }) => {
    const query = opts.principal === undefined ? '' : `?principal=${encodeURIComponent(opts.principal)}`
    const { tokens } = await api<{ tokens: Array<Record<string, unknown>> }>('GET', `tokens${query}`)
    output(tokens, () => table(tokens, ['id', 'principal', 'hint', 'scopes', 'label', 'status', 'expires_at', 'last_used_at']))
  })
token.command('revoke <id>').description('revoke an API token').action(async (id: string) => {
  const revoked = await api<Record<string, unknown>>('POST', `tokens/${encodeURIComponent(String(positiveInt(id)))}/revoke`)
  output(revoked, () => `API token #${String(revoked.id)} of ${String(revoked.principal)} revoked`)
})

const client = program.command('client').description('OAuth clients: pre-registered ones, and those registered by apps')
client.command('add')
  .description('pre-register an OAuth client (claude.ai "Advanced settings", machine agents); a secret is shown once')
  .requiredOption('--name <name>', 'the name people see on the consent page')
  .option('--redirect-uri <uri>', 'an allowed redirect URI (repeat for several)', (value: string, previous: string[]) => [...previous, value], [] as string[])
  .option('--principal <name>', 'approve at once as this principal (no consent page); with --confidential, allows client_credentials')
  .option('--confidential', 'issue a client secret (client_secret_post or client_secret_basic)', false)
  .option('--scopes <scopes>', 'limit the scopes this client may get')
  .action(async (opts: { name: string, redirectUri: string[], principal?: string, confidential: boolean, scopes?: string }) => {
    const created = await api<Record<string, unknown>>('POST', 'clients', {
      name: opts.name, redirect_uris: opts.redirectUri, principal: opts.principal, confidential: opts.confidential, scopes: opts.scopes
    })
    output(created, () => [
      `client ${String(created.client_name)} registered`,
      `  client_id:     ${String(created.client_id)}`,
      ...(created.client_secret !== undefined ? [`  client_secret: ${String(created.client_secret)}`, '', 'The secret is shown only this once; store it now.'] : []),
      ...(opts.principal !== undefined ? [`Authorizations are approved at once as ${opts.principal}.`] : ['Authorizations show the consent page.'])
    ].join('\n'))
  })
client.command('list').description('list OAuth clients').action(async () => {
  const { clients } = await api<{ clients: Array<Record<string, unknown>> }>('GET', 'clients')
  output(clients, () => table(clients, ['client_id', 'kind', 'client_name', 'principal', 'token_endpoint_auth_method', 'active_grants', 'last_used_at']))
})
client.command('remove <client_id>').description('remove a client and revoke everything issued to it').action(async (clientId: string) => {
  const removed = await api<Record<string, unknown>>('DELETE', `clients/${encodeURIComponent(clientId)}`)
  output(removed, () => `client ${clientId} removed; its tokens no longer work`)
})

const grant = program.command('grant').description('OAuth grants: one per authorization of a client by a principal')
grant.command('list')
  .description('list grants')
  .option('--principal <name>', 'only this principal\'s grants')
  .option('--client <client_id>', 'only this client\'s grants')
  .action(async (opts: { principal?: string, client?: string }) => {
    const query = new URLSearchParams()
    if (opts.principal !== undefined) query.set('principal', opts.principal)
    if (opts.client !== undefined) query.set('client', opts.client)
    const { grants } = await api<{ grants: Array<Record<string, unknown>> }>('GET', `grants${query.size > 0 ? `?${query.toString()}` : ''}`)
    output(grants, () => table(grants, ['id', 'principal', 'client_name', 'client_id', 'scopes', 'active_tokens', 'created_at', 'revoked_at', 'revoked_reason']))
  })
grant.command('revoke <id>').description('revoke a grant: its access and refresh tokens stop working at once').action(async (id: string) => {
  const revoked = await api<Record<string, unknown>>('POST', `grants/${encodeURIComponent(String(positiveInt(id)))}/revoke`)
  output(revoked, () => `grant #${String(revoked.revoked)} revoked`)
})

program.command('login-code <name>')
  .description('a one-time code proving principal NAME on the consent page (valid 10 minutes, works once)')
  .action(async (name: string) => {
    const issued = await api<Record<string, unknown>>('POST', 'login-codes', { principal: name })
    output({ code: issued.code, expires_at: issued.expires_at }, () => `login code for ${String(issued.principal)}: ${String(issued.code)} (expires ${String(issued.expires_at)})`)
  })

program.command('audit')
  .description('the audit log')
  .command('tail')
  .description('show the newest audit entries')
  .option('--limit <n>', 'how many', positiveInt, 50)
  .action(async (opts: { limit: number }) => {
    const { entries } = await api<{ entries: Array<Record<string, unknown>> }>('GET', `audit?limit=${opts.limit}`)
    output(entries, () => table(entries, ['at', 'kind', 'action', 'outcome', 'principal', 'auth_kind', 'client_id', 'duration_ms', 'detail']))
  })

program.command('migrate')
  .description('apply database migrations directly (DATABASE_URL, or the embedded database in DATA_DIR when the server is stopped)')
  .action(async () => {
    let config
    try {
      config = loadConfig()
    } catch (err) {
      if (err instanceof ConfigError) throw new CliError(`configuration error: ${err.message}`)
      throw err
    }
    // Loaded here, not at the top: the database drivers double the start time of every other command.
    const { openDatabase } = await import('./db/client.ts')
    const { describeDatabaseError } = await import('./db/errors.ts')
    const { appliedMigrationCount, checkPostgres, migrate } = await import('./db/migrate.ts')
    const { databaseUrl } = config
    try {
      // One connection first: its failure says why (missing database, role, refused port…)
      // before a pool would retry it.
      if (databaseUrl !== undefined) await checkPostgres(databaseUrl)
      const database = await openDatabase({ databaseUrl, dataDir: config.dataDir, poolSize: 1 })
      try {
        const before = await appliedMigrationCount(database)
        await migrate(database, databaseUrl)
        const after = await appliedMigrationCount(database)
        output({ applied: after - before, total: after, database: database.kind }, () =>
          after === before ? `database is up to date (${after} migrations)` : `applied ${after - before} migration(s); ${after} in all`)
      } finally {
        await database.close()
      }
    } catch (err) {
      const problem = databaseUrl === undefined ? undefined : describeDatabaseError(err, databaseUrl)
      throw problem === undefined ? err : new CliError(problem)
    }
  })

program.command('doctor <url>')
  .description('check a deployment the way claude.ai discovers it (URL: https://host/mcp); prints each problem and its fix, exits 1 if any check fails')
  .option('--register', 'also register a throwaway client with claude.ai\'s exact request (creates a real client; remove it with "client remove")', false)
  .action(async (url: string, opts: { register: boolean }) => {
    const report = await runDoctor(url, { register: opts.register })
    output(report.results, () => formatReport(report))
    if (!report.ok) process.exitCode = 1
  })

try {
  await program.parseAsync()
} catch (err) {
  const message = err instanceof Error ? err.message : String(err)
  process.stderr.write(`bus-mcp: ${message}\n`)
  process.exitCode = 1
}
