import { z } from 'zod'
import type { Scope } from '../auth/scopes.ts'
import type { AuthContext } from '../auth/types.ts'
import type { Bus } from '../bus/bus.ts'
import { CHANNEL_NAME_PATTERN, MAX_BODY_BYTES, MAX_READ_LIMIT, MAX_WAIT_SECONDS } from '../bus/limits.ts'

export interface ToolContext { auth: AuthContext, bus: Bus, signal: AbortSignal | undefined }

export interface ToolDefinition<Input extends z.ZodType = z.ZodType> {
  name: string
  title: string
  description: string
  /** The scope a token needs to call this tool; null means any authenticated caller. */
  scope: Scope | null
  input: Input
  readOnly: boolean
  run: (context: ToolContext, input: z.output<Input>) => Promise<unknown>
}

const channel = z.string().regex(CHANNEL_NAME_PATTERN, 'channel names are 1-64 characters: letters, digits, "_", ".", ":" or "-"')
  .describe('Channel name, e.g. "deploys". Omit to use your direct-message inbox.')

function defineTool<Input extends z.ZodType> (tool: ToolDefinition<Input>): ToolDefinition {
  return tool as unknown as ToolDefinition
}

/** The bus tools. Their names, scopes and behaviour are a contract (DESIGN.md). */
export const TOOLS: readonly ToolDefinition[] = [
  defineTool({
    name: 'whoami',
    title: 'Who am I',
    description: 'Shows the principal you act as on the bus, how you authenticated (API token or OAuth), the OAuth client, and your scopes.',
    scope: null,
    readOnly: true,
    input: z.object({}).strict(),
    run: async ({ auth }) => ({
      principal: auth.principalName,
      auth: auth.kind,
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
      channel: channel.optional().describe('Channel to post to; created if it does not exist.'),
      to: z.string().min(1).max(64).optional().describe('Principal name for a direct message (see bus_principals).'),
      body: z.string().min(1, 'body must not be empty').max(MAX_BODY_BYTES).describe(`Message text, at most ${MAX_BODY_BYTES} bytes.`),
      metadata: z.record(z.string(), z.unknown()).optional().describe('Optional JSON object stored with the message (at most 16 KiB).')
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
      channel: channel.optional(),
      after: z.number().int().min(0).optional().describe('Return messages with ids greater than this. Defaults to your acknowledged position.'),
      limit: z.number().int().min(1).max(MAX_READ_LIMIT).optional().describe(`At most this many messages (default 100, max ${MAX_READ_LIMIT}).`),
      wait_seconds: z.number().min(0).max(MAX_WAIT_SECONDS).optional()
        .describe(`Long-poll: wait up to this many seconds (max ${MAX_WAIT_SECONDS}) for a message when none is available. Default 0.`)
    }).strict(),
    run: async ({ auth, bus, signal }, input) => await bus.read(auth, { channel: input.channel, after: input.after, limit: input.limit, waitSeconds: input.wait_seconds }, signal)
  }),
  defineTool({
    name: 'bus_ack',
    title: 'Acknowledge messages',
    description: 'Moves your own position on a channel (or your inbox when "channel" is omitted) to "up_to": bus_read then returns messages after it by default.',
    scope: 'bus:write',
    readOnly: false,
    input: z.object({
      channel: channel.optional(),
      up_to: z.number().int().min(0).describe('The id of the last message you have handled (bus_read returns it as "next_after").')
    }).strict(),
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

/** A zod failure as one sentence a model can act on. */
export function describeInputError (error: z.ZodError): string {
  const problems = error.issues.map((issue) => {
    const path = issue.path.length > 0 ? issue.path.join('.') : 'arguments'
    if (issue.code === 'unrecognized_keys') return `unknown argument${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`
    if (issue.code === 'invalid_type' && issue.input === undefined) return `"${path}" is required`
    return `"${path}": ${issue.message}`
  })
  return `Invalid arguments: ${problems.join('; ')}`
}
