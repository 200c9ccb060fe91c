import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import t, { test } from 'tap'
// @ts-expect-error plain JavaScript without types: it must run on any Node to refuse old ones
import { installProblem, nodeVersionProblem } from '../../bin/node-version.js'
import { REPO_ROOT } from '../helpers/processes.ts'
import { machine, testNeeding } from '../helpers/requirements.ts'

test('Node versions without type stripping are refused, newer ones accepted', async (t) => {
  for (const old of ['20.20.2', 'v20.11.0', '22.17.1', '18.0.0', '21.7.3']) {
    t.match(nodeVersionProblem(old), /^Node\.js 22\.18 or newer is required \(24 LTS recommended\); this is v\d/, old)
  }
  for (const ok of ['22.18.0', '22.21.1', '23.6.0', '24.0.0', 'v24.21.0', '25.1.0']) {
    t.equal(nodeVersionProblem(ok), undefined, ok)
  }
})

test('a copy under node_modules is refused (Node strips no types there); a checkout or a link is fine', async (t) => {
  t.match(installProblem('file:///usr/lib/node_modules/bus-mcp/bin/require-node.js'), /^installed as a copy under node_modules/)
  t.match(installProblem('file:///home/a/app/node_modules/bus-mcp/bin/require-node.js'), /npm link/)
  t.equal(installProblem('file:///home/a/bus-mcp/bin/require-node.js'), undefined)
  t.equal(installProblem('file:///home/a/node_modules_backup/bus-mcp/bin/require-node.js'), undefined)
})

// The machines this project runs on keep Debian's Node 20 as /usr/bin/node: when it is there,
// the launchers are run with it for real.
const systemNode = '/usr/bin/node'
// .ci/run does not install one (it may not even be old), so its absence is a skip in every mode.
testNeeding(t, 'an old Node gets one line from npm start and the CLI', [machine(`a system Node at ${systemNode}`, existsSync(systemNode), 'Debian\'s nodejs package')], async (t) => {
  const version = await run(systemNode, ['-p', 'process.versions.node'])
  if (nodeVersionProblem(version.stdout.trim()) === undefined) {
    t.pass(`${systemNode} is v${version.stdout.trim()}, new enough: nothing to refuse`)
    return
  }
  for (const launcher of ['bin/server.js', 'bin/bus-mcp.js']) {
    const { code, stdout, stderr } = await run(systemNode, [launcher, '--version'])
    t.equal(code, 1, `${launcher}: exit 1`)
    t.equal(stdout, '')
    t.match(stderr, /^bus-mcp: Node\.js 22\.18 or newer is required \(24 LTS recommended\); this is v\d+\.\d+\.\d+\n$/, `${launcher}: one line`)
  }
})

async function run (file: string, args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  return await new Promise((resolve) => {
    execFile(file, args, { cwd: REPO_ROOT, timeout: 30_000, env: { PATH: process.env.PATH ?? '' } }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : Number(error.code ?? 1), stdout, stderr })
    })
  })
}
