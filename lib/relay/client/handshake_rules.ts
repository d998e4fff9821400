/**
 * The pure decisions of the key exchange (protocol.md section 4): which key
 * answer to take, what the key request and the registration hold, how old a
 * cookie may be, and what to say when nobody answers. No I/O, no timers:
 * `KeyExchange` in handshake.ts drives them.
 *
 * @module
 */
import { HandshakeError } from "../../errors.ts";
import type { RsaPublicKey } from "../../crypto/rsa.ts";
import {
  formatAddress,
  isMulticastIPv4,
  type PeerAddress,
} from "../../wire/address.ts";
import { encodeToServer } from "../../wire/message_codec.ts";
import type { ToServerMessage } from "../../wire/messages.ts";
import {
  encodeRecords,
  RecordType,
  TLV_HEADER_SIZE,
  type TlvRecord,
} from "../../wire/tlv.ts";
import type { MemberProfile } from "../types.ts";
import type { HandshakeProgress } from "./types.ts";

/** A cookie older than this is not reused for a registration (protocol.md section 4). */
export const COOKIE_REUSE_MS = 50_000;

/**
 * How long an unconfirmed key (its registration sent, no WELCOME yet) is
 * offered again: the server's member timeout (protocol.md section 6, 30 s by
 * default). A server that took it has let it go by then, and keeps it
 * refused a while after (PROTOCOL.md section 4, "one key, one member"), so
 * offering it again could only be refused: a new key is made instead.
 */
export const UNCONFIRMED_KEY_REUSE_MS = 30_000;

/**
 * Whether an unconfirmed key whose registration was last sent at `sentAtMs`
 * is still worth offering at `nowMs` (see {@linkcode UNCONFIRMED_KEY_REUSE_MS}).
 */
export function reuseUnconfirmedKey(sentAtMs: number, nowMs: number): boolean {
  return nowMs - sentAtMs <= UNCONFIRMED_KEY_REUSE_MS;
}

/** A server's answer to a key request. */
export interface KeyAnswer {
  readonly cookie: Uint8Array;
  readonly serverKey: RsaPublicKey;
  readonly from: PeerAddress;
}

/** What to do with a key answer: take it, drop it and wait on, or fail the step now. */
export type KeyVerdict =
  | { readonly action: "accept" }
  | { readonly action: "skip"; readonly refusal: string }
  | { readonly action: "refuse"; readonly refusal: string };

/** How the client judges server keys. */
export interface KeyPolicy {
  /** Pinned fingerprint `SHA256:...`. */
  readonly pinned: string | undefined;
  /** Checks a key the pin did not decide; returns the refusal, or undefined. */
  readonly verifyKey:
    | ((server: string, fingerprint: string) => string | undefined)
    | undefined;
}

/**
 * Judges a key answer (pure): accepted, or refused with a one-line reason.
 * A refused answer from the unicast target itself fails the step at once
 * (nothing else will answer for it); under multicast another member of the
 * group may still answer with the pinned key, so it is skipped.
 */
export function judgeKeyAnswer(
  answer: KeyAnswer,
  target: PeerAddress,
  policy: KeyPolicy,
): KeyVerdict {
  const fingerprint = answer.serverKey.fingerprint;
  const from = formatAddress(answer.from);
  let refusal: string | undefined;
  if (policy.pinned === undefined) {
    refusal = policy.verifyKey?.(from, fingerprint);
  } else if (fingerprint !== policy.pinned) {
    refusal =
      `The server at ${from} answered with key ${fingerprint}, which does not match the pinned fingerprint ${policy.pinned}: check --fingerprint, or whether something else answers on that address`;
  }
  if (refusal === undefined) return { action: "accept" };
  const fromTarget = !isMulticastIPv4(target.hostname) &&
    from === formatAddress(target);
  return { action: fromTarget ? "refuse" : "skip", refusal };
}

/** The key request (pure): one KEY_REQUEST record padded to the MTU. */
export function keyRequestDatagram(mtu: number): Uint8Array {
  const request = new Uint8Array(Math.max(mtu, TLV_HEADER_SIZE));
  request.set(
    encodeRecords(encodeToServer([{
      kind: "key_request",
      value: new Uint8Array(request.length - TLV_HEADER_SIZE),
    }])),
  );
  return request;
}

/** The error when no key answer came (pure). */
export function noKeyAnswerError(
  target: PeerAddress,
  attempts: number,
  initialMs: number,
): HandshakeError {
  const total = Number((initialMs * (2 ** attempts - 1) / 1000).toFixed(1));
  return new HandshakeError(
    `No answer to the key request sent to ${
      formatAddress(target)
    } after ${attempts} tries over ${total} s: check that the server runs, and --server/--group/--port (use --server HOST:PORT where multicast does not route)`,
  );
}

/** The error when the client closed before its key exchange ended (pure). */
export function closedDuringKeyExchange(): HandshakeError {
  return new HandshakeError("The client was closed during the key exchange");
}

/** The error when the server sent its key but no WELCOME verified (pure). */
export function noWelcomeError(
  server: string,
  attempts: number,
  refusedFull: string | undefined,
): HandshakeError {
  if (refusedFull !== undefined) {
    return new HandshakeError(
      `The server at ${server} is full (NOTICE 4: "${refusedFull}"): it has as many members as it takes in all, or from this client's IP address; try again later, or ask its operator to raise its member limits`,
    );
  }
  return new HandshakeError(
    `The server at ${server} sent its key but no valid WELCOME after ${attempts} tries: check that client and server clocks agree within 60 s and that the server is not full or rate-limiting this address`,
  );
}

/** `listener` made safe to call: one that throws does not break the key exchange. */
export function guardedProgress(
  listener: ((progress: HandshakeProgress) => void) | undefined,
): (progress: HandshakeProgress) => void {
  return (progress) => {
    try {
      listener?.(progress);
    } catch {
      // A failing listener must not break the key exchange.
    }
  };
}

/** What a registration holds besides the cookie. */
export interface RegistrationParts {
  readonly profile: MemberProfile;
  /** The client key: encrypted Fernet key (hybrid) or public key PEM (RSA). */
  readonly keyValue: Uint8Array;
  /** The proof under the current key, when the client holds one (a rekey). */
  readonly proof: Uint8Array | undefined;
  /** Whether it asks for group fan-out. */
  readonly groupCapable: boolean;
}

/**
 * The registration's records (pure, by lib/wire's `encodeToServer`):
 * cookie, key record, the proof of the current key (protocol.md section 10),
 * then GROUP_CAPABLE (section 9: after the key record and its proof).
 */
export function registrationRecords(
  cookie: Uint8Array,
  parts: RegistrationParts,
): TlvRecord[] {
  const messages: ToServerMessage[] = [{
    kind: "registration",
    cookie,
    keyRecord: {
      type: parts.profile === "hybrid"
        ? RecordType.SYMMETRIC_KEY
        : RecordType.CLIENT_PUBLIC_KEY,
      value: parts.keyValue,
    },
    ...(parts.proof && { proof: parts.proof }),
  }];
  if (parts.groupCapable) {
    messages.push({ kind: "group_capable", value: new Uint8Array(0) });
  }
  return encodeToServer(messages);
}
