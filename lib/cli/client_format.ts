/**
 * How the client shows what happens: events (messages, joins, notices, ...),
 * the ready line, key-exchange progress, queued messages and basic-profile
 * ACKs, each as a line for people or a JSON object. Text from the network
 * goes through {@linkcode escapeControl}. Pure.
 *
 * @module
 */
import type { ClientEvent, HandshakeProgress } from "../relay/client/client.ts";
import type { BasicAck } from "../relay/basic/client.ts";
import { escapeControl } from "./log_format.ts";

/** Formats an event as a line for people, or a JSON object. */
export function formatClientEvent(event: ClientEvent, json: boolean): string {
  if (json) {
    switch (event.type) {
      case "message":
        return JSON.stringify({
          event: "message",
          from: event.from,
          text: event.text,
        });
      case "join":
        return JSON.stringify({
          event: "join",
          address: event.address,
          present: event.present,
        });
      case "leave":
        return JSON.stringify({ event: "leave", address: event.address });
      case "notice":
        return JSON.stringify({
          event: "notice",
          code: event.code,
          text: event.text,
        });
      case "ready":
        return JSON.stringify({
          event: "registered",
          server: event.server,
          address: event.address,
        });
      case "reconnecting":
        return JSON.stringify({ event: "reconnecting", reason: event.reason });
      case "kicked":
        return JSON.stringify({ event: "kicked", reason: event.reason });
      case "banned":
        return JSON.stringify({
          event: "banned",
          seconds: event.seconds ?? null,
          reason: event.reason,
        });
      case "failed":
        return JSON.stringify({ event: "failed", reason: event.reason });
      case "undelivered":
        return JSON.stringify({
          event: "undelivered",
          reason: event.reason,
          text: event.text,
        });
    }
  }
  switch (event.type) {
    case "message":
      return `[${event.from}] ${escapeControl(event.text)}`;
    case "join":
      return `* ${event.address} ${event.present ? "present" : "joined"}`;
    case "leave":
      return `* ${event.address} left`;
    case "notice":
      return `! notice ${event.code}: ${escapeControl(event.text)}`;
    case "ready":
      return `* registered with ${event.server} as ${event.address}`;
    case "reconnecting":
      return `* reconnecting: ${event.reason}`;
    case "kicked":
      return `! kicked by the server: ${
        escapeControl(event.reason)
      } (registering again)`;
    case "banned":
      return `! banned by the server${
        event.seconds === undefined ? "" : ` for ${event.seconds} s`
      }: ${escapeControl(event.reason)}`;
    case "failed":
      return `* failed: ${event.reason}`;
    case "undelivered":
      return `! not delivered (${UNDELIVERED_TEXT[event.reason]}): ${
        escapeControl(event.text)
      }`;
  }
}

/** Why a message was not delivered, for people. */
const UNDELIVERED_TEXT: Readonly<Record<string, string>> = {
  outbox_full: "the outbox of messages waiting for the server is full",
  closed: "the client stopped before the server came back",
  unconfirmed:
    "the server stopped answering after it was sent: it may not have arrived",
};

/** The line shown for a message kept in the outbox (the client is not registered). */
export function formatQueued(text: string, json: boolean): string {
  return json
    ? JSON.stringify({ event: "queued", text })
    : `* queued until the server is back: ${escapeControl(text)}`;
}

/** A progress line of the key exchange (or of a confirmation), for stderr. */
export function formatProgress(
  progress: HandshakeProgress,
  group: boolean,
): string {
  const tries = `try ${progress.attempt} of ${progress.attempts} ...`;
  switch (progress.step) {
    case "key":
      return group
        ? `asking the group ${progress.server} for a server key, ${tries}`
        : `asking ${progress.server} for its key, ${tries}`;
    case "register":
      return `registering with ${progress.server} (server key ${progress.fingerprint}), ${tries}`;
    case "confirm":
      return `waiting for ${progress.server} to confirm what was sent, ${tries}`;
  }
}

/** Formats a basic-profile ACK for stdout and the control port. */
export function formatAck(ack: BasicAck, json: boolean): string {
  return json
    ? JSON.stringify({
      event: "ack",
      text: ack.text,
      msgId: ack.msgId,
      encrypted: ack.encrypted,
    })
    : `ack: ${ack.text}${ack.encrypted ? "" : " (unencrypted)"}`;
}

/** What the ready line says: the client joined. */
export interface ReadyInfo {
  /** The server's address. */
  readonly server: string;
  /** The client's own address as the server sees it. */
  readonly address: string;
  /** The server key's fingerprint. */
  readonly fingerprint: string;
  /** The control port's address, when there is one. */
  readonly control?: string;
}

/** The first stdout line: joined, with whom, as whom. */
export function formatReady(ready: ReadyInfo, json: boolean): string {
  const { server, address, control } = ready;
  return json
    ? JSON.stringify({
      event: "ready",
      server,
      address,
      ...(control ? { control } : {}),
    })
    : `ready: registered with ${server} as ${address} (server key ${ready.fingerprint})${
      control ? `; control port ${control}` : ""
    }`;
}
