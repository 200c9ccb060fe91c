import { z } from 'zod'
import type { Scope } from '../auth/scopes.ts'
import type { AuthContext } from '../auth/types.ts'
import type { Bus } from '../bus/bus.ts'
import { CHANNEL_NAME_PATTERN, MAX_BODY_BYTES, MAX_METADATA_BYTES, MAX_READ_LIMIT, MAX_WAIT_SECONDS } from '../bus/limits.ts'
import { INBOX_STREAM } from '../db/schema.ts'

export interface ToolContext { auth: AuthContext, bus: Bus, signal: AbortSignal | undefined }

export interface ToolDefinition<Input extends z.ZodType = z.ZodType> {
  name: string
  title: string
  description: string
  /** The scope a token needs to call this tool; null means any authenticated caller. */
  scope: Scope | null
  input: Input
  readOnly: boolean
  /** Repeating a call has no further effect (read-only tools always; annotations' idempotentHint). */
  idempotent?: boolean
  /** For arguments this tool does not take but a model may mistake it for taking: what to do instead. */
  unknownArgumentHints?: Readonly<Record<string, string>>
  run: (context: ToolContext, input: z.output<Input>) => Promise<unknown>
}

/**
 * An optional argument: `null` means absent (DESIGN.md; our own messages carry `"metadata": null`,
 * and some clients send null for every argument they leave out). The published JSON Schema says
 * so too: `anyOf: [<the type>, {"type": "null"}]` (src/mcp/tool-call.ts inputSchemaOf: never a type array).
 */
function optional<T extends z.ZodType> (schema: T): z.ZodPipe<z.ZodOptional<z.ZodNullable<T>>, z.ZodTransform<z.output<T> | undefined, z.output<T> | null | undefined>> {
  return schema.nullish().transform((value) => value ?? undefined)
}

const CHANNEL_RULE = 'channel names are 1-64 characters: letters, digits, "_", ".", ":" or "-", starting with a letter or digit'

/** A channel to post to. The inbox is not one: "@inbox" (what bus_read calls it) gets its own answer. */
const sendChannel = z.string().regex(CHANNEL_NAME_PATTERN, {
  error: (issue) => issue.input === INBOX_STREAM
    ? `"${INBOX_STREAM}" is an inbox, not a channel: to send a direct message, omit "channel" and give the recipient's name as "to"`
    : CHANNEL_RULE
})

/**
 * A stream to read or acknowledge: a channel, or the caller's inbox when omitted, null or
 * "@inbox" (the name bus_read and bus_ack give the inbox in their answers, so it round-trips).
 */
const streamChannel = z.string()
  .regex(new RegExp(`^(?:${INBOX_STREAM}|${CHANNEL_NAME_PATTERN.source.slice(1, -1)})$`), `${CHANNEL_RULE} (or "${INBOX_STREAM}" for your inbox)`)
  .transform((name) => name === INBOX_STREAM ? undefined : name)

const STREAM_CHANNEL_DESCRIPTION = `Channel name, e.g. "deploys". Omit it (or give null or "${INBOX_STREAM}") for your direct-message inbox.`

function defineTool<Input extends z.ZodType> (tool: ToolDefinition<Input>): ToolDefinition {
  return tool as unknown as ToolDefinition
}

/** The bus tools. Their names, scopes and behaviour are a contract (DESIGN.md). */
export const TOOLS: readonly ToolDefinition[] = [
  defineTool({
    name: 'whoami',
    title: 'Who am I',
    description: 'Shows the principal you act as on the bus, how you authenticated (API token, OAuth, or which external identity provider), the OAuth client, and your scopes.',
    scope: null,
    readOnly: true,
    input: z.object({}).strict(),
    run: async ({ auth }) => ({
      principal: auth.principalName,
      auth: auth.kind,
      provider: auth.provider,
      client_id: auth.clientId,
      scopes: auth.scopes,
      token_expires_at: auth.expiresAt?.toISOString() ?? null
    })
  }),
  defineTool({
    name: 'bus_send',
    title: 'Send a message',
    description: 'Posts a message to a channel (created on first post) or sends a direct message to one principal. ' +
      'Give exactly one of "channel" or "to". Returns the message id.',
    scope: 'bus:write',
    readOnly: false,
    input: z.object({
      channel: optional(sendChannel).describe('Channel to post to; created if it does not exist.'),
      to: optional(z.string().min(1).max(64)).describe('Principal name for a direct message (see bus_principals).'),
      // No maxLength: the limit is in bytes, which JSON Schema cannot state (see decision 0024).
      body: z.string().min(1, 'body must not be empty')
        .describe(`Message text, at most ${MAX_BODY_BYTES} bytes as UTF-8 (a character takes 1 to 4 bytes); split longer text into several messages.`),
      metadata: optional(z.record(z.string(), z.unknown()))
        .describe(`Optional JSON object stored with the message, at most ${MAX_METADATA_BYTES} bytes as JSON.`)
    }).strict(),
    run: async ({ auth, bus }, input) => await bus.send(auth, input)
  }),
  defineTool({
    name: 'bus_read',
    title: 'Read messages',
    description: 'Reads messages on a channel (or your direct-message inbox when "channel" is omitted) with ids after a cursor, oldest first. ' +
      'Without "after", starts from your acknowledged position (see bus_ack). With "wait_seconds", waits up to that long for a new message if none are there yet. ' +
      'Reading does not move your position; call bus_ack with "next_after" when you have handled the messages.',
    scope: 'bus:read',
    readOnly: true,
    input: z.object({
      channel: optional(streamChannel).describe(STREAM_CHANNEL_DESCRIPTION),
      after: optional(z.number().int().min(0)).describe('Return messages with ids greater than this. Defaults to your acknowledged position.'),
      limit: optional(z.number().int().min(1).max(MAX_READ_LIMIT)).describe(`At most this many messages (default 100, max ${MAX_READ_LIMIT}).`),
      wait_seconds: optional(z.number().min(0).max(MAX_WAIT_SECONDS))
        .describe(`Long-poll: wait up to this many seconds (max ${MAX_WAIT_SECONDS}) for a message when none is available. Default 0.`)
    }).strict(),
    unknownArgumentHints: {
      to: 'bus_read reads a channel or your own inbox: omit "channel" to read your inbox; "to" is for bus_send'
    },
    run: async ({ auth, bus, signal }, input) => await bus.read(auth, { channel: input.channel, after: input.after, limit: input.limit, waitSeconds: input.wait_seconds }, signal)
  }),
  defineTool({
    name: 'bus_ack',
    title: 'Acknowledge messages',
    description: 'Moves your own position on a channel (or your inbox when "channel" is omitted) to "up_to": bus_read then returns messages after it by default. ' +
      'It changes nothing anyone else sees.',
    // Only the caller's own cursor moves: a read-only principal must be able to keep up (DESIGN.md).
    scope: 'bus:read',
    readOnly: false,
    idempotent: true,
    input: z.object({
      channel: optional(streamChannel).describe(STREAM_CHANNEL_DESCRIPTION),
      up_to: z.number().int().min(0).describe('The id of the last message you have handled (bus_read returns it as "next_after").')
    }).strict(),
    unknownArgumentHints: {
      to: 'bus_ack moves your position on a channel or your own inbox: omit "channel" for your inbox; "to" is for bus_send',
      next_after: 'give bus_read\'s "next_after" as "up_to"'
    },
    run: async ({ auth, bus }, input) => await bus.ack(auth, { channel: input.channel, upTo: input.up_to })
  }),
  defineTool({
    name: 'bus_channels',
    title: 'List channels',
    description: 'Lists the channels with their message counts and how many messages you have not acknowledged, plus your inbox\'s unread count.',
    scope: 'bus:read',
    readOnly: true,
    input: z.object({}).strict(),
    run: async ({ auth, bus }) => await bus.channels(auth)
  }),
  defineTool({
    name: 'bus_principals',
    title: 'List principals',
    description: 'Lists who is on the bus: every principal (agent or person) you can send direct messages to.',
    scope: 'bus:read',
    readOnly: true,
    input: z.object({}).strict(),
    run: async ({ bus }) => await bus.principals()
  })
]

export const TOOLS_BY_NAME: ReadonlyMap<string, ToolDefinition> = new Map(TOOLS.map((t) => [t.name, t]))

/** A zod failure as one sentence a model can act on (with the tool's hints for arguments it does not take). */
export function describeInputError (error: z.ZodError, tool?: ToolDefinition): string {
  const problems = error.issues.flatMap((issue) => {
    const path = issue.path.length > 0 ? issue.path.join('.') : 'arguments'
    if (issue.code === 'unrecognized_keys') return unknownArguments(issue.keys, tool?.unknownArgumentHints)
    if (issue.code === 'invalid_type' && issue.input === undefined) return [`"${path}" is required`]
    return [`"${path}": ${issue.message}`]
  })
  return `Invalid arguments: ${problems.join('; ')}`
}

function unknownArguments (keys: string[], hints: Readonly<Record<string, string>> | undefined): string[] {
  const hinted = hints === undefined ? [] : keys.filter((key) => Object.hasOwn(hints, key))
  const plain = keys.filter((key) => !hinted.includes(key))
  const problems = hinted.map((key) => `unknown argument "${key}" (${hints?.[key] ?? ''})`)
  if (plain.length > 0) problems.unshift(`unknown argument${plain.length > 1 ? 's' : ''} ${plain.map((k) => `"${k}"`).join(', ')}`)
  return problems
}
