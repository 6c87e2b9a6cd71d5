"""Draw greedy episodes: grid worlds and MPE with matplotlib, SMAX with jaxmarl's visualiser.

An episode is recorded inside one jitted scan (the learner's ``greedy_policy`` on the env it trains
on, without the auto-reset so that the terminal state is kept), then drawn on the host frame by
frame and written as a GIF (and optionally one PNG per frame). Drawing reads the raw env state,
found by unwrapping wrapper and episode states (``.env_state``) down to the environment's own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from envs.checkers import APPLE_REWARD, COLS, ROWS, Checkers
from envs.core import AutoReset, stdout_to_stderr
from envs.hallway import G1_CELL, G2_CELL, NUM_CELLS, START_CELL, Hallway
from envs.predator_prey import PredatorPrey
from jmarl.config import ConfigError

APPLE_COLOUR, LEMON_COLOUR = "#8fd18f", "#f3e27a"
AGENT_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                 "tab:olive", "tab:cyan", "tab:gray")


@dataclasses.dataclass
class Episode:
    """Host copies: ``states[t]`` before step t and ``states[-1]`` after the last step (length + 1)."""

    states: list[Any]
    actions: np.ndarray  # [length, N]
    rewards: np.ndarray  # [length]
    won: bool

    @property
    def length(self) -> int:
        return len(self.rewards)


def raw_state(state: Any) -> Any:
    while hasattr(state, "env_state"):
        state = state.env_state
    return state


def record_episode(algo: Any, params: Any, key: jax.Array) -> Episode:
    """One greedy decentralised episode of ``algo`` (one run's ``params``) from a reset with ``key``."""
    env = algo.env.env if isinstance(algo.env, AutoReset) else algo.env
    limit = env.spec.episode_limit

    def run(params, key):
        k_reset, k_steps = jax.random.split(key)
        state, ts = jax.vmap(env.reset)(k_reset[None])
        carry, policy = algo.greedy_policy(params, 1)

        def body(c, k):
            state, ts, carry, reset, done = c
            carry, actions = policy(carry, ts.obs, ts.avail_actions, reset)
            new_state, new_ts = jax.vmap(env.step)(k[None], state, actions)
            record = (new_state, actions[0], new_ts.reward[0], done, new_ts.info["won"][0])
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(done, b, a), new, old)  # noqa: E731
            return (keep(new_state, state), keep(new_ts, ts), carry, jnp.zeros(1, bool), done | new_ts.done[0]), record

        init = (state, ts, carry, jnp.ones(1, bool), jnp.zeros((), bool))
        _, (after, actions, rewards, done_before, won) = jax.lax.scan(body, init, jax.random.split(k_steps, limit))
        return state, after, actions, rewards, done_before, won

    first, after, actions, rewards, done_before, won = jax.device_get(jax.jit(run)(params, key))
    length = int(np.sum(~done_before))
    take = lambda tree, t: jax.tree.map(lambda x: x[t], tree)  # noqa: E731
    states = [raw_state(take(first, 0))] + [raw_state(take(take(after, t), 0)) for t in range(length)]
    return Episode(states, actions[:length], rewards[:length], bool(won[length - 1]))


# ----- drawing -----------------------------------------------------------------------------------


def _draw_hallway(ax, env: Hallway, state: Any, bounds: Any) -> None:
    labels = {G2_CELL: "g2 (+5)", START_CELL: "start", G1_CELL: "g1 (+8)"}
    for cell in range(NUM_CELLS):
        goal = cell in (G1_CELL, G2_CELL)
        ax.add_patch(_rect(cell - 0.5, -0.5, 1, 1, "#cfe8cf" if goal else "white"))
        ax.text(cell, -0.75, labels.get(cell, ""), ha="center", va="top", fontsize=8)
    positions = np.asarray(state.positions)
    for i, pos in enumerate(positions):
        _agent(ax, float(pos), 0.2 - 0.4 * i, 0.17, AGENT_COLOURS[i], i)
    _legend(ax, [_agent_key(AGENT_COLOURS[i], f"agent {i}") for i in range(len(positions))]
            + [_patch_key("#cfe8cf", "goal (paid when both agents reach it)")])
    ax.set_xlim(-0.6, NUM_CELLS - 0.4)
    ax.set_ylim(-1.2, 0.6)


def _draw_checkers(ax, env: Checkers, state: Any, bounds: Any) -> None:
    apples, lemons = np.asarray(state.apples), np.asarray(state.lemons)
    for r in range(ROWS):
        for c in range(COLS):
            colour = APPLE_COLOUR if apples[r, c] else LEMON_COLOUR if lemons[r, c] else "white"
            ax.add_patch(_rect(c - 0.5, r - 0.5, 1, 1, colour))
    for i, (r, c) in enumerate(np.asarray(state.positions)):
        _agent(ax, float(c), float(r), 0.3, AGENT_COLOURS[i], i)
    _legend(ax, [_agent_key(AGENT_COLOURS[i], f"agent {i}: apple +{APPLE_REWARD[i]:g}, lemon -{APPLE_REWARD[i]:g}")
                 for i in range(len(APPLE_REWARD))]
            + [_patch_key(APPLE_COLOUR, "apple"), _patch_key(LEMON_COLOUR, "lemon")])
    ax.set_xlim(-0.6, COLS - 0.4)
    ax.set_ylim(ROWS - 0.4, -0.6)  # row 0 on top


def _draw_predator_prey(ax, env: PredatorPrey, state: Any, bounds: Any) -> None:
    g = env.grid_size
    for r in range(g):
        for c in range(g):
            ax.add_patch(_rect(c - 0.5, r - 0.5, 1, 1, "white"))
    for (r, c), alive in zip(np.asarray(state.prey_pos), np.asarray(state.prey_alive), strict=True):
        if alive:
            ax.plot(c, r, marker="*", markersize=14, color="tab:red")
    for i, ((r, c), alive) in enumerate(zip(np.asarray(state.agent_pos), np.asarray(state.agent_alive), strict=True)):
        if alive:
            _agent(ax, float(c), float(r), 0.35, "tab:blue", i, fontsize=7)
    _legend(ax, [_agent_key("tab:blue", "agent (numbered)"), _mark_key("*", "tab:red", "prey (uncaught)")])
    ax.set_xlim(-0.6, g - 0.4)
    ax.set_ylim(g - 0.4, -0.6)


def _mpe_positions(env: Any, state: Any) -> tuple[np.ndarray, np.ndarray]:
    """(agents [N, 2], landmarks [L, 2]) of jaxmarl's MPE state or of line/circle control's."""
    n = env.spec.num_agents
    if hasattr(state, "p_pos"):
        pos = np.asarray(state.p_pos)
        return pos[:n], pos[n:]
    return np.asarray(state.pos), np.asarray(state.landmarks)


def _draw_mpe(ax, env: Any, state: Any, bounds: Any) -> None:
    agents, landmarks = _mpe_positions(env, state)
    (lo, hi) = bounds
    radius = 0.025 * float(max(hi - lo))
    ax.scatter(landmarks[:, 0], landmarks[:, 1], marker="x", s=60, color="black")
    for i, (x, y) in enumerate(agents):
        colour = AGENT_COLOURS[i % len(AGENT_COLOURS)]
        ax.add_patch(_circle(float(x), float(y), radius, colour, f"agent {i}"))
        ax.text(float(x) + 1.3 * radius, float(y) + 1.3 * radius, str(i), fontsize=7)
    _legend(ax, [_agent_key(AGENT_COLOURS[i % len(AGENT_COLOURS)], f"agent {i}") for i in range(len(agents))]
            + [_mark_key("x", "black", "landmark")])
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])


def _mpe_bounds(env: Any, states: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    points = np.concatenate([np.concatenate(_mpe_positions(env, s)) for s in states])
    lo, hi = points.min(axis=0), points.max(axis=0)
    pad = 0.1 * max(float((hi - lo).max()), 1.0)
    return lo - pad, hi + pad


def _rect(x, y, w, h, colour):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, facecolor=colour, edgecolor="grey", linewidth=0.8)


def _circle(x, y, radius, colour, label):
    from matplotlib.patches import Circle

    return Circle((x, y), radius, facecolor=colour, edgecolor="black", linewidth=0.6, label=label)


def _agent(ax, x: float, y: float, radius: float, colour: str, index: int, fontsize: int = 8) -> None:
    """Agent ``index`` (numbered from 0, as in the env's arrays) as a numbered disc."""
    ax.add_patch(_circle(x, y, radius, colour, f"agent {index}"))
    ax.text(x, y, str(index), ha="center", va="center", color="white", fontsize=fontsize)


def _agent_key(colour: str, label: str):
    from matplotlib.lines import Line2D

    return Line2D([], [], marker="o", linestyle="none", markersize=8, markerfacecolor=colour,
                  markeredgecolor="black", markeredgewidth=0.6, label=label)


def _mark_key(marker: str, colour: str, label: str):
    from matplotlib.lines import Line2D

    return Line2D([], [], marker=marker, linestyle="none", markersize=9, color=colour, label=label)


def _patch_key(colour: str, label: str):
    from matplotlib.patches import Patch

    return Patch(facecolor=colour, edgecolor="grey", linewidth=0.8, label=label)


def _legend(ax, handles: list) -> None:
    """What the marks are, beside the board (never over it)."""
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=7,
              frameon=False)


def drawer(env: Any) -> tuple[Callable, Callable[[list[Any]], Any]]:
    """(draw(ax, env, state, bounds), bounds(states)) for the env family; ConfigError if none."""
    from envs.mpe import SimpleSpread, _FormationControl

    raw = env.unwrapped if hasattr(env, "unwrapped") else env
    no_bounds = lambda states: None  # noqa: E731
    if isinstance(raw, Hallway):
        return _draw_hallway, no_bounds
    if isinstance(raw, Checkers):
        return _draw_checkers, no_bounds
    if isinstance(raw, PredatorPrey):
        return _draw_predator_prey, no_bounds
    if isinstance(raw, SimpleSpread | _FormationControl):
        return _draw_mpe, lambda states: _mpe_bounds(raw, states)
    raise ConfigError(f"no drawing for {raw.spec.name}; rendering covers hallway, checkers, predator_prey, "
                      f"the MPE envs and SMAX")


def draw_frames(env: Any, episode: Episode, title: str) -> list[np.ndarray]:
    """One RGB image per state of the episode."""
    draw, bounds_of = drawer(env)
    raw = env.unwrapped if hasattr(env, "unwrapped") else env
    bounds = bounds_of(episode.states)
    frames, total = [], 0.0
    for t, state in enumerate(episode.states):
        fig = Figure(figsize=(6.6, 3.2 if isinstance(raw, Hallway | Checkers) else 5.0), dpi=80)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        draw(ax, raw, state, bounds)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        if t > 0:
            total += float(episode.rewards[t - 1])
        step = f"step {t}/{episode.length}" + (f", actions {episode.actions[t - 1].tolist()}" if t > 0 else "")
        ax.set_title(f"{title}\n{step}, return {total:.2f}", fontsize=8)
        fig.tight_layout()
        canvas.draw()
        frames.append(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    return frames


def save_gif(frames: list[np.ndarray], path: str | Path, fps: float = 2.0) -> Path:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return Path(path)


def render_smax(env: Any, episode: Episode, path: str | Path, keys: list[jax.Array]) -> Path:
    """jaxmarl's SMAX visualiser on the recorded states and actions. It re-simulates the world ticks
    between env steps from each recorded state (with its own split of the step key), so unit motion
    between two steps may differ slightly from the recorded episode; every env step's state is exact. It
    steps the world op by op and draws every world tick with pyplot: minutes per episode on a CPU."""
    import matplotlib

    matplotlib.use("Agg")
    with stdout_to_stderr():  # jaxmarl prints on import
        from jaxmarl.viz.visualizer import SMAXVisualizer

    raw = env.unwrapped
    sequence = [(k, s, {a: jnp.asarray(int(episode.actions[t][i])) for i, a in enumerate(raw.agents)})
                for t, (k, s) in enumerate(zip(keys, episode.states[:-1], strict=True))]
    SMAXVisualizer(raw.jax_env, sequence).animate(save_fname=str(path), view=False)
    return Path(path)


def render(algo: Any, params: Any, key: jax.Array, out_dir: str | Path, name: str = "episode",
           frames: bool = False) -> tuple[Episode, list[Path]]:
    """Record one greedy episode and write ``<name>.gif`` (and ``<name>_NNN.png`` with ``frames``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = algo.env
    raw = env.unwrapped if hasattr(env, "unwrapped") else env
    if type(raw).__name__ != "SMAX":
        drawer(env)  # fail before recording if the env has no drawing
    episode = record_episode(algo, params, key)
    title = f"{algo.config.algo} on {raw.spec.name}"
    if type(raw).__name__ == "SMAX":
        step_keys = list(jax.random.split(jax.random.split(key)[1], raw.spec.episode_limit))[:episode.length]
        return episode, [render_smax(env, episode, out_dir / f"{name}.gif", step_keys)]
    images = draw_frames(env, episode, title)
    paths = [save_gif(images, out_dir / f"{name}.gif")]
    if frames:
        for t, image in enumerate(images):
            Image.fromarray(image).save(out_dir / f"{name}_{t:03d}.png")
            paths.append(out_dir / f"{name}_{t:03d}.png")
    return episode, paths

