/**
 * Evacuation placement: where each guest of a host goes. Largest guests first, each to the allowed
 * host with the most free memory left (less the host's reserve: control/admission.ts), so big
 * guests are not stranded by small ones; an
 * opportunistic guest goes to a host that encrypts when one has room, and moves in plain text (with
 * the warning) only when none has. A host is allowed when the guest's memory fits and, for guests
 * that require encryption, the host encrypts. `--mode` may make a guest's setting stricter, never
 * weaker (mode.ts moveSetting).
 * A guest with a passthrough-class NIC may go to a host without one; it gets the emulated NIC there
 * (as Hyper-V does), and the plan says so.
 */
import type { EncryptedMigration, NicKind } from '../guest/types.js';
import { decideMode, moveSetting, type ModeDecision } from './mode.js';
import { memoryForGuests } from '../control/admission.js';
import { formatBytes } from '../common/units.js';

export interface PlacementHost {
  name: string;
  encrypts: boolean;
  freeMemoryBytes: number;
  /** What the host keeps from guests (control/admission.ts); absent: the default. */
  memoryReserveBytes?: number;
  hasSriov: boolean;
}

export interface PlacementGuest {
  name: string;
  memoryBytes: number;
  encryptedMigration: EncryptedMigration;
  nic: NicKind;
}

export type Placement =
  | { guest: string; to: string; mode: ModeDecision['mode']; warning?: string; nicFallback: boolean }
  | { guest: string; to: null; reason: string };

export function planEvacuation(
  source: { name: string; encrypts: boolean },
  guests: readonly PlacementGuest[],
  targets: readonly PlacementHost[],
  modeOverride?: EncryptedMigration,
): Placement[] {
  // What each host can still give guests as the plan fills it: free memory less its reserve.
  const free = new Map(targets.map((t) => [t.name, memoryForGuests({ host: t.name, ...t })]));
  const order = [...guests].sort((a, b) => b.memoryBytes - a.memoryBytes || a.name.localeCompare(b.name));
  const plan: Placement[] = [];
  for (const guest of order) {
    const setting = moveSetting(guest.name, guest.encryptedMigration, modeOverride);
    const reasons: string[] = [];
    let best: { host: PlacementHost; decision: ModeDecision; left: number } | null = null;
    for (const host of targets) {
      const left = free.get(host.name)! - guest.memoryBytes;
      if (left < 0) {
        const room = free.get(host.name)!;
        reasons.push(`${host.name}: ${formatBytes(room)} of memory left for guests, it needs ${formatBytes(guest.memoryBytes)}`);
        continue;
      }
      let decision: ModeDecision;
      try {
        decision = decideMode(setting, source, host);
      } catch {
        reasons.push(`${host.name}: cannot encrypt and the guest requires it`);
        continue;
      }
      // An encrypting host first (a plain move only when none has room); then the most memory left.
      const encrypts = (d: ModeDecision) => (d.mode === 'encrypted' ? 1 : 0);
      if (!best || encrypts(decision) > encrypts(best.decision) || (encrypts(decision) === encrypts(best.decision) && left > best.left)) {
        best = { host, decision, left };
      }
    }
    if (!best) {
      plan.push({ guest: guest.name, to: null, reason: reasons.join('; ') || 'no target hosts' });
      continue;
    }
    free.set(best.host.name, best.left);
    plan.push({
      guest: guest.name,
      to: best.host.name,
      mode: best.decision.mode,
      ...(best.decision.warning ? { warning: best.decision.warning } : {}),
      nicFallback: guest.nic === 'sriov' && !best.host.hasSriov,
    });
  }
  return plan;
}
